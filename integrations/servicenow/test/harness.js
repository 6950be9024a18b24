// Runs a crm-sync business rule script unchanged under Node, with stand-ins for the Glide APIs
// it calls, and prints the HTTP request it would send as one JSON line. Used by
// shared/pipeline/tests/integration_scripts.rs to check that what the script signs is what the
// webhook endpoint verifies.
//
// Usage: node harness.js RULE.js OPERATION RECORD_JSON SECRET NOW_MS
// Stand-ins follow the ServiceNow API reference: GlideCertificateEncryption.generateMac(key,
// algorithm, data) takes the key base64-encoded and returns the MAC base64-encoded;
// GlideStringUtil.base64Encode(s) encodes a string; GlideDateTime().getNumericValue() is epoch
// milliseconds; current.operation() is 'insert' | 'update' | 'delete'.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const vm = require('vm');

const [rulePath, operation, recordJson, secret, nowMs] = process.argv.slice(2);
const record = JSON.parse(recordJson);
let sent = null;

const sandbox = {
  current: {
    operation: () => operation,
    getValue: (f) => (record[f] === undefined || record[f] === null ? null : String(record[f])),
    getUniqueValue: () => record.sys_id,
  },
  previous: null,
  gs: {
    getProperty: (name) => ({
      'x_crmsync.webhook_secret': secret,
      'x_crmsync.webhook_url': 'https://hooks.example.com/webhooks/sn',
    })[name],
  },
  GlideDateTime: function () {
    this.getNumericValue = () => Number(nowMs);
  },
  GlideStringUtil: { base64Encode: (s) => Buffer.from(s, 'utf8').toString('base64') },
  GlideCertificateEncryption: function () {
    this.generateMac = (key, alg, data) => {
      if (alg !== 'HmacSHA256') throw new Error('unexpected algorithm ' + alg);
      return crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(data, 'utf8').digest('base64');
    };
  },
  sn_ws: {
    RESTMessageV2: function () {
      const req = { headers: {} };
      this.setEndpoint = (u) => { req.endpoint = u; };
      this.setHttpMethod = (m) => { req.method = m; };
      this.setRequestHeader = (k, v) => { req.headers[k] = v; };
      this.setRequestBody = (b) => { req.body = b; };
      this.executeAsync = () => { sent = req; };
      this.execute = () => { sent = req; };
    },
  },
  JSON,
  String,
  Math,
};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(rulePath, 'utf8'), sandbox, { filename: rulePath });
if (!sent) {
  console.error('the rule sent nothing');
  process.exit(1);
}
process.stdout.write(JSON.stringify(sent) + '\n');
