// Sends every Contact change to crm-sync. Triggers cannot make callouts, so the work is queued.
trigger CrmSyncContactTrigger on Contact (after insert, after update, after delete, after undelete) {
    CrmSyncNotifier.notify('contact', Trigger.operationType, Trigger.isDelete ? Trigger.old : Trigger.new);
}
