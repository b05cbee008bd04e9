//! Opening an ended workflow again for a retry: its row back to `running`, the tasks that run
//! again back to their new records, and a request that tells the leader, in one transaction.

use deadpool_postgres::Transaction;

use super::codec::{classify, millis_to_sql};
use super::lease::add_request;
use crate::store::{StoreError, TaskRecord};

const REOPEN_WORKFLOW: &str = "UPDATE workflows SET state = 'running', finished_at = NULL, \
     cancel_requested = false WHERE id = $1 AND state IN ('failed', 'cancelled') RETURNING id";
const RESET_TASKS: &str = "UPDATE tasks AS t SET state = u.state, attempt = u.attempt, \
     n_failures = u.n_failures, retry_at = u.retry_at, output = u.output \
     FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[]) \
     AS u (task_idx, state, attempt, n_failures, retry_at, output) \
     WHERE t.workflow_id = $1 AND t.task_idx = u.task_idx RETURNING t.task_idx";

/// See [`Store::reopen_workflow`](crate::store::Store::reopen_workflow).
pub(super) async fn reopen_workflow(
    tx: Transaction<'_>,
    channel: &str,
    workflow_id: &str,
    reset: &[TaskRecord],
) -> Result<bool, StoreError> {
    let context = format!("reopen workflow '{workflow_id}'");
    let sql_error = |error| classify(error, &context);
    if tx
        .query_opt(REOPEN_WORKFLOW, &[&workflow_id])
        .await
        .map_err(sql_error)?
        .is_none()
    {
        return Ok(false);
    }
    let task_idx: Vec<i64> = reset.iter().map(|record| i64::from(record.task_idx)).collect();
    let state: Vec<&str> = reset.iter().map(|record| record.state.as_str()).collect();
    let attempt: Vec<i64> = reset.iter().map(|record| i64::from(record.attempt)).collect();
    let n_failures: Vec<i64> = reset.iter().map(|record| i64::from(record.n_failures)).collect();
    let retry_at: Vec<Option<i64>> = reset.iter().map(|record| record.retry_at.map(millis_to_sql)).collect();
    let output: Vec<Option<&str>> = reset.iter().map(|record| record.output.as_deref()).collect();
    let rows = tx
        .query(
            RESET_TASKS,
            &[
                &workflow_id,
                &task_idx,
                &state,
                &attempt,
                &n_failures,
                &retry_at,
                &output,
            ],
        )
        .await
        .map_err(sql_error)?;
    if rows.len() != reset.len() {
        let found: std::collections::HashSet<i64> = rows.iter().map(|row| row.get(0)).collect();
        let missing = task_idx
            .iter()
            .find(|idx| !found.contains(idx))
            .copied()
            .unwrap_or_default();
        return Err(StoreError::Conflict {
            reason: format!("task {missing} of workflow '{workflow_id}' does not exist"),
        });
    }
    add_request(&tx, channel, "submit", workflow_id).await?;
    tx.commit().await.map_err(sql_error)?;
    Ok(true)
}
