//! The messages of the control socket, shared by `tapvsadm` (the client) and the daemon (the
//! server): where the socket is by default, the [`Request`] tapvsadm sends and the
//! [`Response`] it gets back.
//!
//! Each message is one line of JSON on a Unix stream socket: tapvsadm writes a request line, the
//! daemon parses the command line with [`crate::parse`] (names already turned into numbers by
//! [`crate::resolve`]), executes it and writes response lines
//! with the text ipvsadm would print and its exit status. A long listing is streamed: every
//! line but the last has `more` set and carries the next part of standard output; the last one
//! (`more` false) carries the rest, standard error and the exit status.

use serde::{Deserialize, Serialize};

use crate::names::Names;
use crate::AdmError;

/// Where tapvsadm finds the daemon unless told otherwise (`--socket`, `TAPVS_SOCKET`), and
/// where the daemon listens unless its config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tapvs/tapvs.sock";

/// A request: ipvsadm arguments (without the program name) and, for `-R`, the input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The command line.
    pub args: Vec<String>,
    /// Standard input (restore).
    #[serde(default)]
    pub stdin: String,
    /// Host and service names for a listing without `-n` (`-L`, `-S`), as the client read
    /// them; absent: numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Names>,
}

/// The answer: what to print and the exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Text for standard output.
    pub stdout: String,
    /// Text for standard error.
    pub stderr: String,
    /// Exit status.
    pub code: i32,
    /// More response lines follow (a streamed listing); `stderr` and `code` are those of the
    /// last line.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

impl Response {
    /// Success (exit status 0), printing `stdout`.
    pub fn out(stdout: String) -> Response {
        Response {
            stdout,
            ..Response::default()
        }
    }

    /// A part of a streamed standard output, more to follow.
    pub fn part(stdout: String) -> Response {
        Response {
            stdout,
            more: true,
            ..Response::default()
        }
    }

    /// Failure with `e`: its message on standard error and its exit status.
    pub fn err(e: &AdmError) -> Response {
        Response {
            stderr: format!("{e}\n"),
            code: e.exit_code(),
            ..Response::default()
        }
    }
}
