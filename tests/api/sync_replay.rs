//! Applying sync pages a second time (after a pagination restart) converges: no collision,
//! no duplicate, counts exact.

use bankgraph::db::Db;
use bankgraph::domain::SyncPage;
use bankgraph::identity::store::Store;
use bankgraph::plaid::wire::{RemovedTransaction, Transaction, TransactionsSyncResponse};
use serde_json::json;

use crate::helpers::*;

fn tx(id: &str, account: &str, pending: bool, pending_id: Option<&str>) -> Transaction {
    serde_json::from_value(json!({
        "transaction_id": id, "account_id": account, "amount": 12.5, "iso_currency_code": "USD",
        "unofficial_currency_code": null, "date": "2026-11-20", "name": "Coffee", "pending": pending,
        "pending_transaction_id": pending_id, "payment_channel": "in store"
    }))
    .unwrap()
}

fn page(added: Vec<Transaction>, removed: &[&str], has_more: bool, cursor: &str) -> TransactionsSyncResponse {
    TransactionsSyncResponse {
        transactions_update_status: None,
        accounts: vec![],
        added,
        modified: vec![],
        removed: removed
            .iter()
            .map(|r| RemovedTransaction { transaction_id: r.to_string(), account_id: None })
            .collect(),
        next_cursor: cursor.into(),
        has_more,
        request_id: "r".into(),
    }
}

#[tokio::test]
async fn replayed_pages_converge_to_one_row_per_purchase_with_exact_counts() {
    let app = TestApp::spawn_with(Options {
        transactions_per_item: Some(0),
        args: vec!["--job-workers=0".into()],
        ..Default::default()
    })
    .await;
    let t = app.token("replay");
    let done = app.link(&t).await;
    let item = done["platformItemId"].as_str().unwrap();
    let plaid_account = app.emu_get(&format!("/emulator/items/{item}")).await["accounts"][0]["account_id"]
        .as_str()
        .unwrap()
        .to_string();
    let store = Store::new(Db::connect(&app.database_url).await.unwrap());
    let conn = store.connection_by_plaid_item(item).await.unwrap().unwrap();

    let a = page(vec![tx("P1", &plaid_account, true, None), tx("X1", &plaid_account, false, None)], &[], true, "c1");
    let b = page(vec![tx("T1", &plaid_account, false, Some("P1"))], &["P1"], false, "c2");
    let apply = |p: &TransactionsSyncResponse| {
        let (store, conn, p) = (store.clone(), conn.clone(), p.clone());
        async move { store.apply_sync_page(&conn, &SyncPage::from(&p), chrono::Utc::now()).await.unwrap() }
    };
    apply(&a).await;
    let first_id = app.stored_transactions(&t, json!({})).await["P1"].0.clone();
    apply(&b).await;
    let after = app.stored_transactions(&t, json!({})).await;
    assert_eq!(after.keys().collect::<Vec<_>>(), ["T1", "X1"]);
    assert_eq!(after["T1"].0, first_id, "the posted transaction kept the pending one's id");

    // The loop restarts from its first cursor: both pages again, in order.
    apply(&a).await;
    apply(&b).await;
    let replayed = app.stored_transactions(&t, json!({})).await;
    assert_eq!(replayed, after, "a replay changes nothing");
    let r = app.transactions(&t, json!({})).await;
    assert_eq!(r["data"]["getPlaidBankTransactions"]["totalCount"], 2, "counts are exact after the replay");
    let pending = app.transactions(&t, json!({"pending": true})).await;
    assert_eq!(pending["data"]["getPlaidBankTransactions"]["totalCount"], 0);
    let rows = app.db_i64("select count(*) from bank_transactions where removed_at is null").await;
    assert_eq!(rows, 2);
}

fn on(mut t: Transaction, date: &str) -> Transaction {
    t.date = date.parse().unwrap();
    t
}

#[tokio::test]
async fn date_filtered_totals_come_from_day_counts_and_follow_every_change() {
    let app = TestApp::spawn_with(Options {
        transactions_per_item: Some(0),
        args: vec!["--job-workers=0".into()],
        ..Default::default()
    })
    .await;
    let t = app.token("days");
    let done = app.link(&t).await;
    let item = done["platformItemId"].as_str().unwrap();
    let acct = app.emu_get(&format!("/emulator/items/{item}")).await["accounts"][0]["account_id"]
        .as_str()
        .unwrap()
        .to_string();
    let store = Store::new(Db::connect(&app.database_url).await.unwrap());
    let conn = store.connection_by_plaid_item(item).await.unwrap().unwrap();
    let apply = |p: TransactionsSyncResponse| {
        let (store, conn) = (store.clone(), conn.clone());
        async move { store.apply_sync_page(&conn, &SyncPage::from(&p), chrono::Utc::now()).await.unwrap() }
    };
    apply(page(
        vec![
            on(tx("A", &acct, false, None), "2026-11-01"),
            on(tx("B", &acct, false, None), "2026-11-02"),
            on(tx("P", &acct, true, None), "2026-11-03"),
            on(tx("C", &acct, false, None), "2026-11-05"),
        ],
        &[],
        false,
        "c1",
    ))
    .await;
    // B moves to another day, P posts on a later day, C is removed.
    let mut p2 = page(vec![on(tx("T", &acct, false, Some("P")), "2026-11-04")], &["C"], false, "c2");
    p2.modified = vec![on(tx("B", &acct, false, None), "2026-11-06")];
    apply(p2).await;

    let ranges = [
        (None, None),
        (Some("2026-11-01T00:00:00Z"), Some("2026-11-01T00:00:00Z")),
        (Some("2026-11-01T12:00:00Z"), None),
        (None, Some("2026-11-04T00:00:00Z")),
        (Some("2026-11-02T00:00:00Z"), Some("2026-11-05T23:59:59Z")),
        (Some("2026-11-06T00:00:00Z"), Some("2026-12-31T00:00:00Z")),
        (Some("2027-01-01T00:00:00Z"), None),
    ];
    for (start, end) in ranges {
        for pending in [None, Some(true), Some(false)] {
            let mut input = json!({"paginate": {"limit": 100}});
            if let Some(s) = start {
                input["startDate"] = json!(s);
            }
            if let Some(e) = end {
                input["endDate"] = json!(e);
            }
            if let Some(p) = pending {
                input["pending"] = json!(p);
            }
            let r = app.transactions(&t, input.clone()).await;
            let page = &r["data"]["getPlaidBankTransactions"];
            let listed = page["transactions"].as_array().unwrap_or_else(|| panic!("{r}")).len();
            assert_eq!(page["totalCount"].as_u64(), Some(listed as u64), "{input}: {page}");
            let mut sql = "select count(*) from bank_transactions where removed_at is null".to_string();
            if let Some(s) = start {
                sql += &format!(" and transaction_date >= '{}'", bankgraph::db::ts(s.parse().unwrap()));
            }
            if let Some(e) = end {
                sql += &format!(" and transaction_date <= '{}'", bankgraph::db::ts(e.parse().unwrap()));
            }
            if let Some(p) = pending {
                sql += if p { " and pending = true" } else { " and pending = false" };
            }
            assert_eq!(app.db_i64(&sql).await, listed as i64, "{input}");
        }
    }
    assert_eq!(
        app.db_i64("select count(*) from account_transaction_day_counts where posted < 0 or pending < 0").await,
        0
    );
}
