//! `exec`'s `on_stdout`/`on_stderr`: the output of a command handed to
//! Python as it comes (local and remote alike), and collected for the
//! `ExecResult`.

use pyo3::prelude::*;

use crate::computer::PyExecResult;
use crate::runtime::Cancel;

/// The callbacks of one `exec` and what it printed so far.
pub(crate) struct Output<'a> {
    /// `on_stdout`, `on_stderr`.
    callbacks: [Option<Py<PyAny>>; 2],
    cancel: &'a Cancel,
    /// Everything printed, per stream.
    collected: [Vec<u8>; 2],
    /// The start of a character split across chunks, per stream.
    pending: [Vec<u8>; 2],
}

impl<'a> Output<'a> {
    pub(crate) fn new(
        on_stdout: Option<Py<PyAny>>,
        on_stderr: Option<Py<PyAny>>,
        cancel: &'a Cancel,
    ) -> Self {
        Output {
            callbacks: [on_stdout, on_stderr],
            cancel,
            collected: [Vec::new(), Vec::new()],
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// A chunk of stdout (`stderr` false) or stderr: collected, and handed
    /// to its callback as `str` once whole characters are there.
    pub(crate) fn take(&mut self, stderr: bool, data: &[u8]) {
        let index = usize::from(stderr);
        self.collected[index].extend_from_slice(data);
        if self.callbacks[index].is_none() {
            return;
        }
        self.pending[index].extend_from_slice(data);
        let text = decode(&mut self.pending[index], false);
        self.call(index, text);
    }

    /// The end: what is left of a split character goes out as U+FFFD.
    fn flush(&mut self) {
        for index in 0..2 {
            if !self.pending[index].is_empty() {
                let text = decode(&mut self.pending[index], true);
                self.call(index, text);
            }
        }
    }

    fn call(&self, index: usize, text: String) {
        let Some(callback) = &self.callbacks[index] else {
            return;
        };
        if text.is_empty() || self.cancel.raised_any() {
            return;
        }
        Python::attach(|py| {
            if let Err(error) = callback.bind(py).call1((text,)) {
                self.cancel.raised(py, error);
            }
        });
    }

    /// The `ExecResult` of what was printed and how it ended.
    pub(crate) fn finish(
        mut self,
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    ) -> PyExecResult {
        self.flush();
        let [stdout, stderr] = &self.collected;
        PyExecResult::new(stdout, stderr, code, signal, timed_out)
    }
}

/// Decodes the whole UTF-8 characters of `pending`, each invalid sequence
/// as one U+FFFD (as `bytes.decode(errors="replace")` does); the start of
/// a character cut at the end stays in `pending`, unless `last`.
fn decode(pending: &mut Vec<u8>, last: bool) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = pending;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.push_str(text);
                rest = &[];
                break;
            }
            Err(error) => {
                let (good, bad) = rest.split_at(error.valid_up_to());
                out.push_str(std::str::from_utf8(good).expect("valid up to here"));
                match error.error_len() {
                    Some(len) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &bad[len..];
                    }
                    None if last => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &[];
                        break;
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let kept = rest.to_vec();
    *pending = kept;
    out
}
