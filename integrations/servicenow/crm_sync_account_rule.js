/*
 * Business rule on customer_account: When = async (after), Insert and Update.
 * For deletes, create a second rule: When = after, Delete, with the same script (it uses
 * executeAsync so the user's transaction does not wait on the callout).
 *
 * System property (type password2) x_crmsync.webhook_secret holds the signing secret;
 * x_crmsync.webhook_url the endpoint https://.../webhooks/<source id>.
 * Signature: X-CrmSync-Signature = v1= + base64(HMAC-SHA256(secret, timestamp + "." + body)).
 */
(function executeRule(current, previous /* null in async rules */) {
    var op = current.operation();
    var operation = op == 'insert' ? 'create' : (op == 'delete' ? 'delete' : 'update');
    var fields = ['sys_id', 'number', 'name', 'phone', 'website', 'street', 'city', 'state', 'zip',
                  'country', 'sys_updated_on'];
    var record = null;
    if (operation != 'delete') {
        record = {};
        for (var i = 0; i < fields.length; i++) {
            record[fields[i]] = current.getValue(fields[i]) || '';
        }
    }
    var body = JSON.stringify({
        entity: 'account',
        operation: operation,
        id: current.getUniqueValue(),
        modified_at: current.getValue('sys_updated_on'),
        record: record
    });
    var ts = String(Math.floor(new GlideDateTime().getNumericValue() / 1000));
    var secret = gs.getProperty('x_crmsync.webhook_secret');
    var key = GlideStringUtil.base64Encode(secret);
    var mac = new GlideCertificateEncryption().generateMac(key, 'HmacSHA256', ts + '.' + body);
    var r = new sn_ws.RESTMessageV2();
    r.setEndpoint(gs.getProperty('x_crmsync.webhook_url'));
    r.setHttpMethod('POST');
    r.setRequestHeader('Content-Type', 'application/json');
    r.setRequestHeader('X-CrmSync-Timestamp', ts);
    r.setRequestHeader('X-CrmSync-Signature', 'v1=' + mac);
    r.setRequestBody(body);
    r.executeAsync();
})(current, previous);
