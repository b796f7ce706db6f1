//! What the desktop tests share: a window opened on a computer's display,
//! and a wait until it shows (with a window manager: until it is managed),
//! which reports the desktop session's state when it never does.

use std::time::{Duration, Instant};

use orgo_runtime::{Computer, Exec};

/// How long one call into the guest may take.
const CALL: Duration = Duration::from_secs(120);

/// What the desktop session is doing, for a window that never shows: its
/// processes, the window manager's marks on the root window, the window
/// tree and the session's logs.
const SESSION_STATE: &str = "ps -eo pid,ppid,stat,wchan:24,etimes,args --forest | grep -v ' \\[' ; \
    export DISPLAY=:0; echo; xprop -root _ORGO_WM_READY _NET_SUPPORTING_WM_CHECK _NET_ACTIVE_WINDOW; \
    echo; xwininfo -root -tree; cd /var/log/orgo && for f in desktop* apps*; do echo \"== $f\"; tail -n 40 \"$f\"; done";

/// Opens an `xterm` titled `title` at `geometry` (`COLSxROWS[+X+Y]`) on
/// the computer's display, in the background.
pub(crate) async fn open_window(computer: &Computer, title: &str, geometry: &str) {
    let script = format!(
        "DISPLAY=:0 setsid xterm -T {title} -geometry {geometry} -e sleep 600 >/dev/null 2>&1 &"
    );
    let out = computer.exec(Exec::shell(script), CALL).await.unwrap();
    assert!(
        out.status.success(),
        "opening window `{title}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `xwininfo` for window `title` until it is viewable, for up to
/// `patience`: its `xwininfo`. Panics with the session's state if it never
/// is.
pub(crate) async fn wait_viewable(computer: &Computer, title: &str, patience: Duration) -> String {
    let script = format!("DISPLAY=:0 xwininfo -name {title} 2>&1 || true");
    let deadline = Instant::now() + patience;
    loop {
        let out = computer.exec(Exec::shell(&script), CALL).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("Map State: IsViewable") {
            return text;
        }
        if Instant::now() >= deadline {
            let state = computer
                .exec(Exec::shell(SESSION_STATE), CALL)
                .await
                .unwrap();
            panic!(
                "window `{title}` never showed: {text}\nthe session:\n{}{}",
                String::from_utf8_lossy(&state.stdout),
                String::from_utf8_lossy(&state.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
