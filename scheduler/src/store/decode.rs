//! What the stores check of the numbers they read back: a column's value must fit the type it
//! is read as. Each returns what is wrong with the value, for the store's "corrupt row" error.

/// A task index or attempt number.
pub(super) fn to_u32(value: i64) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("out of range: {value}"))
}

/// An exit code or signal number, or `NULL`.
pub(super) fn to_i32(value: Option<i64>) -> Result<Option<i32>, String> {
    value
        .map(|value| i32::try_from(value).map_err(|_| format!("out of range: {value}")))
        .transpose()
}

/// A count or instant, never negative, or `NULL`.
pub(super) fn to_count(value: Option<i64>) -> Result<Option<u64>, String> {
    value
        .map(|value| u64::try_from(value).map_err(|_| format!("negative: {value}")))
        .transpose()
}
