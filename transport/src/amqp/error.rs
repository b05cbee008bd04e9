//! Turning lapin's errors into [`TransportError`]s, by what the caller should do: the broker
//! refusing a request (no such queue, arguments that differ, access refused) is `Rejected`,
//! anything about the connection or a channel going away is `Unavailable`.

use std::fmt;

use lapin::protocol::{AMQPErrorKind, AMQPSoftError};

use crate::TransportError;

/// `error` as a [`TransportError`], its reason starting with `context` (what was being done).
pub(super) fn from_lapin(error: &lapin::Error, context: impl fmt::Display) -> TransportError {
    let reason = format!("{context}: {}", describe(error));
    if is_refusal(error) {
        TransportError::Rejected { reason }
    } else {
        TransportError::Unavailable { reason }
    }
}

/// Whether the broker refused the request itself, so that sending it again cannot succeed.
pub(super) fn is_refusal(error: &lapin::Error) -> bool {
    let lapin::Error::ProtocolError(amqp_error) = error else {
        return false;
    };
    matches!(
        amqp_error.kind(),
        AMQPErrorKind::Soft(
            AMQPSoftError::NOTFOUND
                | AMQPSoftError::ACCESSREFUSED
                | AMQPSoftError::RESOURCELOCKED
                | AMQPSoftError::PRECONDITIONFAILED
                | AMQPSoftError::CONTENTTOOLARGE
        )
    )
}

/// Whether `error` is the broker saying that something does not exist.
pub(super) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error, lapin::Error::ProtocolError(amqp_error)
        if *amqp_error.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// lapin's description of `error`, in lowercase where lapin capitalizes its own words.
pub(super) fn describe(error: &lapin::Error) -> String {
    match error {
        lapin::Error::IOError(io_error) => format!("i/o error: {io_error}"),
        lapin::Error::InvalidChannelState(state) => {
            format!("the channel is {}", format!("{state:?}").to_lowercase())
        }
        lapin::Error::InvalidConnectionState(state) => {
            format!("the connection is {}", format!("{state:?}").to_lowercase())
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use lapin::protocol::{AMQPError, AMQPHardError};

    use super::*;

    fn protocol_error(kind: AMQPErrorKind) -> lapin::Error {
        lapin::Error::ProtocolError(AMQPError::new(kind, "NOT_FOUND - no queue 'x' in vhost '/'".into()))
    }

    #[test]
    fn refusals_are_rejected_and_the_rest_unavailable() {
        let missing = from_lapin(
            &protocol_error(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)),
            "consume `x`",
        );
        assert!(matches!(missing, TransportError::Rejected { .. }), "{missing:?}");
        assert!(missing.to_string().contains("consume `x`: "), "{missing}");
        let forced = from_lapin(
            &protocol_error(AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)),
            "publish",
        );
        assert!(matches!(forced, TransportError::Unavailable { .. }), "{forced:?}");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let reset = from_lapin(&lapin::Error::IOError(io.into()), "publish");
        assert_eq!(
            reset.to_string(),
            "transport unavailable: publish: i/o error: connection reset by peer"
        );
        let closed = from_lapin(&lapin::Error::InvalidChannelState(lapin::ChannelState::Closed), "ack");
        assert_eq!(closed.to_string(), "transport unavailable: ack: the channel is closed");
    }
}
