//! Helpers for the integration tests: temp dirs, running the binary,
//! the generated corpus.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory with an index inside.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), "# no settings\n").expect("config");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn index(&self) -> PathBuf {
        self.path().join("index")
    }

    /// The sample corpus, generated into this sandbox.
    pub fn corpus(&self) -> PathBuf {
        let dir = self.path().join("sample");
        shirabe::samples::write_sample_corpus(&dir).expect("sample corpus");
        dir
    }

    /// A command for the binary, run in the sandbox with its own index and
    /// no user config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shirabe"));
        c.current_dir(self.path())
            .env("SHIRABE_INDEX", self.index())
            .env("SHIRABE_CONFIG", self.path().join("config.toml"))
            .env_remove("HF_HOME")
            .env("HF_HUB_CACHE", self.path().join("no-hf-cache"))
            .env("HF_HUB_OFFLINE", "1")
            .env("XDG_CACHE_HOME", self.path().join("cache"))
            .env("NO_COLOR", "1")
            .args(args);
        c
    }

    /// Runs and returns output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run shirabe")
    }

    /// Runs, expects exit code `code`, returns stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "shirabe {args:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        stdout
    }

    /// Search hits as JSON values.
    pub fn search_json(&self, query: &str, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["search", query, "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

/// File name of a hit's path.
pub fn file_name(hit: &serde_json::Value) -> String {
    Path::new(hit["path"].as_str().unwrap_or_default())
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
