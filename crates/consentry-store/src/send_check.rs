//! Compile-time check that the store's futures can be spawned on a multi-threaded runtime (the
//! HTTP server needs `Send + 'static` handler futures). This module only has to compile.
#![allow(dead_code)]

use crate::*;

fn spawnable<F: std::future::Future + Send + 'static>(_: F)
where
    F::Output: Send,
{
}

fn check(s: Store, a: Actor, case: NewCase, hooks: Vec<NewWebhook>, lines: Vec<BulkLine>, e: NewEntry) {
    let s2 = s.clone();
    let a2 = a.clone();
    spawnable(async move {
        s2.schema_version().await?;
        s2.create_bank(
            &a2,
            NewBank {
                name: "n".into(),
                description: String::new(),
                enabled: true,
                purpose: BankPurpose::Other,
            },
        )
        .await?;
        s2.update_bank(&a2, 1, BankUpdate::default()).await?;
        s2.set_bank_enabled(&a2, 1, true).await?;
        s2.delete_bank(&a2, 1).await?;
        s2.list_banks().await?;
        s2.add_entry(&a2, e).await?;
        s2.add_entries_bulk(&a2, 1, EntrySourceKind::Import, lines).await?;
        s2.import_pdq_text(&a2, 1, "").await?;
        s2.disable_entry(&a2, 1).await?;
        s2.enable_entry(&a2, 1).await?;
        s2.remove_entry(&a2, 1).await?;
        s2.find_entries(&SignalValue::Pdq(Hash256::ZERO)).await?;
        s2.changes_since(1, 1).await?;
        s2.prune_changes(&a2, 1).await?;
        let mut l = s2.listen_changes().await?;
        l.wait(std::time::Duration::from_secs(1)).await?;
        s2.list_cases(None, 0, 1).await?;
        s2.load_all_active(SignalType::Pdq).await?;
        s2.verify_api_key("").await?;
        s2.create_api_key(&a2, "", &[Scope::Lookup]).await?;
        s2.revoke_api_key(&a2, 1).await?;
        s2.create_case(&a2, case).await?;
        s2.case_status("", "").await?;
        s2.withdraw_case("", "").await?;
        s2.admin_withdraw_case(&a2, 1).await?;
        s2.set_case_status(&a2, 1, CaseStatus::Active).await?;
        s2.record_audit(&a2, "x", "y", serde_json::Value::Null).await?;
        s2.audit_events(0, 1).await?;
        s2.enqueue_webhooks(&hooks).await?;
        s2.claim_due_webhooks(Timestamp::now(), 1, std::time::Duration::from_secs(1)).await?;
        s2.mark_webhook_delivered(1, 1).await?;
        s2.mark_webhook_failed(1, 1, "e", None).await?;
        Ok::<(), StoreError>(())
    });
}
