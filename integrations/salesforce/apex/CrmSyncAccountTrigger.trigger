// Sends every Account change to crm-sync. Triggers cannot make callouts, so the work is queued.
trigger CrmSyncAccountTrigger on Account (after insert, after update, after delete, after undelete) {
    CrmSyncNotifier.notify('account', Trigger.operationType, Trigger.isDelete ? Trigger.old : Trigger.new);
}
