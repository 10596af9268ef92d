//! Open and Save-as file choosers: the desktop's own dialog (rfd: the XDG portal, else zenity)
//! on a helper thread so the canvas keeps drawing, and the in-app path dialog where none exists.

use crossbeam_channel::{Receiver, TryRecvError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the chooser is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Open,
    SaveAs,
}

/// One question to a chooser: what for, where to start, and the suggested file name.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub purpose: Purpose,
    pub start_dir: PathBuf,
    pub file_name: Option<String>,
}

/// Shows a native dialog and waits for the answer (`None`: cancelled, or no dialog came up).
pub type PickFn = Arc<dyn Fn(&Request) -> Option<PathBuf> + Send + Sync>;

/// Which chooser Open… and Save as… use.
#[derive(Clone)]
pub enum Chooser {
    /// A native dialog, shown by the function on a helper thread.
    Native(PickFn),
    /// The in-app dialog with a typed path (and the examples one click away).
    Builtin,
}

impl std::fmt::Debug for Chooser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Chooser::Native(_) => "Native",
            Chooser::Builtin => "Builtin",
        })
    }
}

/// The environment variable that forces a chooser: `native` or `builtin`.
pub const CHOOSER_ENV: &str = "CACHEDIT_FILE_DIALOG";

impl Chooser {
    /// The desktop's dialog when this session has a way to show one (a D-Bus session for the
    /// XDG portal, or zenity on the PATH), else the in-app one; `CACHEDIT_FILE_DIALOG` overrides.
    pub fn from_env() -> Self {
        let forced = std::env::var(CHOOSER_ENV).ok();
        let native = match forced.as_deref().map(str::trim) {
            Some("native") => true,
            Some("builtin") => false,
            _ => {
                session_bus(std::env::var("DBUS_SESSION_BUS_ADDRESS").ok().as_deref())
                    || on_path("zenity", std::env::var_os("PATH").as_deref())
            }
        };
        if native {
            Chooser::Native(Arc::new(rfd_pick))
        } else {
            Chooser::Builtin
        }
    }
}

/// Does this session have a D-Bus session bus (where the XDG portal lives)? `disabled:` is
/// libdbus's way of saying there is none.
fn session_bus(address: Option<&str>) -> bool {
    address.is_some_and(|a| !a.trim().is_empty() && !a.starts_with("disabled:"))
}

/// Is `program` an executable file in one of the `PATH` directories?
fn on_path(program: &str, path: Option<&std::ffi::OsStr>) -> bool {
    path.is_some_and(|p| std::env::split_paths(p).any(|dir| dir.join(program).is_file()))
}

/// The native dialog through rfd: a workflow (or a PNG the app wrote) to open, or where to
/// save one.
pub fn rfd_pick(req: &Request) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(&req.start_dir).unwrap_or_else(|_| req.start_dir.clone());
    let portal = session_bus(std::env::var("DBUS_SESSION_BUS_ADDRESS").ok().as_deref());
    let mut dialog = rfd::FileDialog::new().set_directory(&dir);
    if let Some(name) = suggested_name(req.file_name.as_deref(), &dir, portal) {
        dialog = dialog.set_file_name(name);
    }
    match req.purpose {
        Purpose::Open => dialog
            .set_title("Open workflow")
            .add_filter("Workflow or image from Save Image", &["ron", "png"])
            .add_filter("All files", &["*"])
            .pick_file(),
        Purpose::SaveAs => dialog
            .set_title("Save workflow as")
            .add_filter("Workflow", &["ron"])
            .save_file(),
    }
}

/// The file name to hand rfd. The portal takes a folder and a bare name; zenity (what rfd uses
/// without a D-Bus session) has no starting folder, only a name, which may be a whole path.
fn suggested_name(name: Option<&str>, dir: &Path, portal: bool) -> Option<String> {
    match (name, portal) {
        (Some(n), true) => Some(n.to_string()),
        (None, true) => None,
        (Some(n), false) => Some(dir.join(n).display().to_string()),
        (None, false) => Some(format!("{}/", dir.display())),
    }
}

/// An answer this quick did not come from a person: the dialog never appeared.
pub const TOO_QUICK: Duration = Duration::from_millis(250);

/// A native dialog that is open now, on its helper thread.
pub struct Waiting<T> {
    pub request: Request,
    /// What to do after a successful save (e.g. quit, open another file).
    pub then: T,
    started: Instant,
    answer: Receiver<Option<PathBuf>>,
}

/// Where a native dialog stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Pending,
    Chosen(PathBuf),
    Cancelled,
    /// No dialog came up (no portal, no zenity): use the in-app one.
    Unavailable,
}

impl<T> Waiting<T> {
    /// Shows the dialog with `pick` on a helper thread.
    pub fn spawn(pick: PickFn, request: Request, then: T) -> Self {
        let (tx, answer) = crossbeam_channel::bounded(1);
        let req = request.clone();
        std::thread::spawn(move || {
            // The receiver may be gone (the user switched to the in-app dialog); nothing to do.
            let _ = tx.send(pick(&req));
        });
        Waiting {
            request,
            then,
            started: Instant::now(),
            answer,
        }
    }

    /// The answer, if it has come.
    pub fn poll(&self) -> Answer {
        match self.answer.try_recv() {
            Ok(Some(path)) => Answer::Chosen(path),
            Ok(None) if self.started.elapsed() < TOO_QUICK => Answer::Unavailable,
            Ok(None) => Answer::Cancelled,
            Err(TryRecvError::Empty) => Answer::Pending,
            Err(TryRecvError::Disconnected) => Answer::Unavailable,
        }
    }
}

/// A save path as typed or chosen: `.ron` added when there is no extension.
pub fn with_ron_extension(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    if p.extension().is_none() {
        p.set_extension("ron");
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(w: &Waiting<()>) -> Answer {
        let start = Instant::now();
        loop {
            let a = w.poll();
            if a != Answer::Pending || start.elapsed() > Duration::from_secs(5) {
                return a;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn request() -> Request {
        Request {
            purpose: Purpose::Open,
            start_dir: PathBuf::from("."),
            file_name: None,
        }
    }

    #[test]
    fn a_chosen_path_comes_back_from_the_helper_thread() {
        let w = Waiting::spawn(
            Arc::new(|r: &Request| Some(r.start_dir.join("a.ron"))),
            request(),
            (),
        );
        assert_eq!(wait(&w), Answer::Chosen(PathBuf::from("./a.ron")));
    }

    #[test]
    fn an_instant_no_means_no_dialog_and_a_slow_one_means_cancel() {
        let instant = Waiting::spawn(Arc::new(|_: &Request| None), request(), ());
        assert_eq!(wait(&instant), Answer::Unavailable);
        let slow = Waiting::spawn(
            Arc::new(|_: &Request| {
                std::thread::sleep(TOO_QUICK + Duration::from_millis(50));
                None
            }),
            request(),
            (),
        );
        assert_eq!(wait(&slow), Answer::Cancelled);
    }

    #[test]
    fn a_panicking_dialog_counts_as_unavailable() {
        let w = Waiting::spawn(
            Arc::new(|_: &Request| -> Option<PathBuf> { panic!("no display") }),
            request(),
            (),
        );
        assert_eq!(wait(&w), Answer::Unavailable);
    }

    #[test]
    fn zenity_is_found_only_where_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!on_path("zenity", Some(dir.path().as_os_str())));
        std::fs::write(dir.path().join("zenity"), "").expect("write");
        assert!(on_path("zenity", Some(dir.path().as_os_str())));
        assert!(!on_path("zenity", None));
    }

    #[test]
    fn zenity_gets_the_folder_in_the_name_and_the_portal_a_bare_name() {
        let dir = Path::new("/w/flows");
        assert_eq!(
            suggested_name(Some("a.ron"), dir, true).as_deref(),
            Some("a.ron")
        );
        assert_eq!(suggested_name(None, dir, true), None);
        assert_eq!(
            suggested_name(Some("a.ron"), dir, false).as_deref(),
            Some("/w/flows/a.ron")
        );
        assert_eq!(
            suggested_name(None, dir, false).as_deref(),
            Some("/w/flows/")
        );
    }

    #[test]
    fn a_disabled_or_missing_bus_address_is_no_session_bus() {
        assert!(session_bus(Some("unix:path=/run/user/1000/bus")));
        assert!(!session_bus(Some("disabled:")));
        assert!(!session_bus(Some("")));
        assert!(!session_bus(None));
    }

    #[test]
    fn save_paths_get_the_ron_extension_only_when_they_have_none() {
        assert_eq!(
            with_ron_extension(Path::new("a/b")),
            PathBuf::from("a/b.ron")
        );
        assert_eq!(
            with_ron_extension(Path::new("a/b.txt")),
            PathBuf::from("a/b.txt")
        );
    }
}
