//! The shared black-box test helper: starts the real `anneal` binary on port 0 with a temporary
//! data directory and drives it over HTTP. Later capabilities add one helper per endpoint here.
//!
//! The metadata store is SQLite in the data directory, or with `ANNEAL_TEST_BACKEND=postgres` a
//! fresh PostgreSQL database per data directory (`t_<random>`, dropped with its server) on the
//! server `ANNEAL_TEST_POSTGRES` names (`scripts/with-postgres.sh` starts one and sets it), so the
//! same suites run against both backends (`make test` runs them twice).

#![allow(dead_code)]

pub mod proxy;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `anneal` binary under test.
pub fn anneal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_anneal")
}

/// A command for the binary with no `ANNEAL_*` variables inherited from the test environment.
pub fn anneal_command() -> Command {
    let mut command = Command::new(anneal_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ANNEAL_") {
            command.env_remove(key);
        }
    }
    command.kill_on_drop(true);
    command
}

/// A running `anneal serve`.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The temporary data directory (removed on drop).
    pub data: tempfile::TempDir,
    stderr_path: PathBuf,
    /// A client that sends the admin token (when authentication is on), as a user's would.
    pub client: reqwest::Client,
    /// The admin token the server made on first start (`None` with `--no-auth`).
    pub token: Option<String>,
    /// A client that sends no credentials.
    pub anonymous: reqwest::Client,
    /// The lines the server printed on stdout after its address line.
    printed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts a server with a fresh data directory.
    pub async fn start() -> Self {
        Self::start_with(&[], &[]).await
    }

    /// Starts a server with extra flags and environment variables.
    pub async fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("temp data dir");
        Self::start_in(data, args, envs).await
    }

    /// Starts a server on an existing data directory (and on its test database, when the tests
    /// run on PostgreSQL and neither `args` nor `envs` name another).
    pub async fn start_in(data: tempfile::TempDir, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_in_as(data, None, args, envs).await
    }

    /// Starts a server as the unprivileged `uid` and `gid` (through `setpriv`, which execs it: the
    /// child is the server itself), on a fresh data dir that uid owns. The test must run as root.
    pub async fn start_as(uid: u32, gid: u32, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("temp data dir");
        std::os::unix::fs::chown(data.path(), Some(uid), Some(gid)).expect("chown the data dir");
        Self::start_in_as(data, Some((uid, gid)), args, envs).await
    }

    async fn start_in_as(
        data: tempfile::TempDir,
        user: Option<(u32, u32)>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let stderr_path = data.path().join("test-server.stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let names_database = args.iter().any(|a| a.starts_with("--database-url"))
            || envs.iter().any(|(k, _)| *k == "ANNEAL_DATABASE_URL");
        let database = if names_database { None } else { test_database(data.path()).await };
        let mut command = anneal_command();
        if let Some((uid, gid)) = user {
            command = Command::new("setpriv");
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ANNEAL_") {
                    command.env_remove(key);
                }
            }
            command
                .args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "--".into()])
                .arg(anneal_bin())
                .kill_on_drop(true);
        }
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(database.iter().flat_map(|url| ["--database-url", url.as_str()]))
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().expect("spawn anneal");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            other => panic!("anneal printed no address ({other:?}); stderr:\n{}", read(&stderr_path)),
        };
        let base = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        // Keep reading what the server prints after its address (the login link), so its stdout
        // never fills up or closes under it.
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = printed.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut all) = sink.lock() {
                    all.push(line);
                }
            }
        });
        let token = std::fs::read_to_string(data.path().join("admin.token")).ok().map(|t| t.trim().to_owned());
        let client = client_with(token.as_deref());
        let anonymous = client_with(None);
        Self { child, base, data, stderr_path, client, token, anonymous, printed }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// `GET path`, expecting a JSON body; returns the status and the body.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// What the server has logged so far.
    pub fn stderr(&self) -> String {
        read(&self.stderr_path)
    }

    /// Sends `signal` (e.g. `TERM`, `INT`) and waits for the process to exit.
    pub async fn stop_with(mut self, signal: &str) -> (ExitStatus, String) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill");
        assert!(sent.success(), "kill -{signal} {pid} failed");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s of the signal")
            .expect("wait");
        (status, self.stderr())
    }

    /// Kills the server with SIGKILL (a crash: nothing of it runs after) and returns its data
    /// directory for a restart.
    pub async fn crash_keeping_data(mut self) -> tempfile::TempDir {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("wait");
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.data, placeholder)
    }

    /// Stops the server with SIGTERM and returns its data directory for a restart.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        let pid = self.child.id().expect("running").to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        self.child.wait().await.expect("wait");
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.data, placeholder)
    }
}

/// A client that sends `token` as a bearer token on every request, if given.
pub fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers).build().expect("client")
}

impl TestServer {
    /// The lines the server printed on stdout after its address line, waiting up to 10 s for at
    /// least `at_least` of them.
    pub async fn printed_lines(&self, at_least: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.printed.lock().map(|l| l.clone()).unwrap_or_default();
            if lines.len() >= at_least || std::time::Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin token; panics when the server runs without authentication.
    pub fn admin_token(&self) -> &str {
        self.token.as_deref().expect("the server made an admin token")
    }

    /// Creates a token with `role` for `projects` (empty: every project); returns the token.
    pub async fn create_token(&self, role: &str, projects: &[&str]) -> String {
        let (status, body) = self
            .post_json(
                "/v1/tokens",
                &serde_json::json!({"name": format!("{role} token"), "role": role, "projects": projects}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The store the test servers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `ANNEAL_TEST_BACKEND`: `postgres`, or `sqlite` (the default).
pub fn backend() -> Backend {
    match std::env::var("ANNEAL_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("ANNEAL_TEST_BACKEND={other}: use sqlite or postgres"),
    }
}

/// The test PostgreSQL server (a URL whose user may create databases).
pub fn postgres_server() -> String {
    std::env::var("ANNEAL_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
        .expect("ANNEAL_TEST_POSTGRES is not set: run the tests through scripts/with-postgres.sh (make test does)")
}

/// The file in a data directory that names its PostgreSQL test database, so a server restarted
/// on the same data directory finds the same database.
const TEST_DATABASE_FILE: &str = "test-database-url";

/// The PostgreSQL database of the data directory `data` (made the first time), or `None` when the
/// tests run on SQLite.
async fn test_database(data: &Path) -> Option<String> {
    if backend() == Backend::Sqlite {
        return None;
    }
    let file = data.join(TEST_DATABASE_FILE);
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url.trim().to_owned());
    }
    let url = fresh_postgres_database().await;
    std::fs::write(&file, &url).expect("keep the test database's name");
    Some(url)
}

/// A new, empty database (`t_<random>`) on the test PostgreSQL server; returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let server = postgres_server();
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random");
    let name = format!("t_{:016x}", u64::from_le_bytes(bytes));
    let mut conn = sqlx::PgConnection::connect(&server).await.expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    conn.close().await.expect("close");
    with_database(&server, &name)
}

/// `url` with its database replaced by `name` (its query kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (prefix, _) =
        base.rsplit_once('/').filter(|(p, _)| p.contains("://") && !p.ends_with('/')).unwrap_or((base, ""));
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

/// Runs `statement` on the database of a (stopped) server's data directory, whichever backend it
/// is: the SQLite file in it, or the PostgreSQL database it names.
pub fn execute_sql(data: &Path, statement: &str) {
    let data = data.to_path_buf();
    let statement = statement.to_owned();
    // On a thread of its own: the caller may be on a runtime already.
    std::thread::spawn(move || {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            match std::fs::read_to_string(data.join(TEST_DATABASE_FILE)) {
                Ok(url) => {
                    let mut conn = sqlx::PgConnection::connect(url.trim()).await.expect("connect");
                    sqlx::query(sqlx::AssertSqlSafe(statement.clone())).execute(&mut conn).await.expect(&statement);
                }
                Err(_) => {
                    let url = format!("sqlite://{}", data.join("anneal.db").display());
                    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open database");
                    sqlx::query(sqlx::AssertSqlSafe(statement.clone())).execute(&mut conn).await.expect(&statement);
                }
            }
        });
    })
    .join()
    .expect("statement ran");
}

impl TestServer {
    /// Everything the server's database holds, as bytes to search: the SQLite file, or every
    /// row of every table of its PostgreSQL database as text.
    pub async fn database_contents(&self) -> Vec<u8> {
        use sqlx::Connection;
        let Ok(url) = std::fs::read_to_string(self.data.path().join(TEST_DATABASE_FILE)) else {
            return std::fs::read(self.data.path().join("anneal.db")).expect("the SQLite database");
        };
        let mut conn = sqlx::PgConnection::connect(url.trim()).await.expect("connect");
        let tables: Vec<(String,)> =
            sqlx::query_as("SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public'")
                .fetch_all(&mut conn)
                .await
                .expect("tables");
        let mut all = Vec::new();
        for (table,) in tables {
            let rows: Vec<(String,)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT CAST(t AS TEXT) FROM \"{table}\" t")))
                    .fetch_all(&mut conn)
                    .await
                    .expect("rows");
            for (row,) in rows {
                all.extend_from_slice(row.as_bytes());
                all.push(b'\n');
            }
        }
        all
    }
}

/// A server's PostgreSQL test database is dropped with it, unless its data directory was taken
/// for a restart (`stop_keeping_data`, `crash_keeping_data`).
impl Drop for TestServer {
    fn drop(&mut self) {
        let Ok(url) = std::fs::read_to_string(self.data.path().join(TEST_DATABASE_FILE)) else { return };
        let server = postgres_server();
        let Some((_, name)) = url.trim().split('?').next().and_then(|base| base.rsplit_once('/')) else { return };
        let name = name.to_owned();
        let _ = self.child.start_kill();
        std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await;
                }
            });
        })
        .join()
        .ok();
    }
}

/// Runs `anneal` with `args` to completion; returns the exit code, stdout and stderr.
pub async fn run_anneal(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        anneal_command().args(args).envs(envs.iter().copied()).stdin(Stdio::null()).output(),
    )
    .await
    .expect("anneal finishes within 60 s")
    .expect("run anneal");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The project's Python: `$VIRTUAL_ENV/bin/python`, else the repository's `.venv` (both set up by
/// `make`, with torch and the official `ml` v1 client).
pub fn python() -> PathBuf {
    std::env::var_os("VIRTUAL_ENV")
        .map(|venv| PathBuf::from(venv).join("bin/python"))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// The TorchScript models of `fixtures/make_models.py`, written once per test binary by the
/// project's Python (the `.venv` that `make` sets up, or `$VIRTUAL_ENV`).
pub fn fixture_models() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = python();
        let dir = std::env::temp_dir().join(format!("anneal-fixture-models-{}", std::process::id()));
        let status = std::process::Command::new(&python)
            .arg(root.join("tests/fixtures/make_models.py"))
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (run `make test` to set up .venv)", python.display()));
        assert!(status.success(), "make_models.py failed");
        dir
    })
}

impl TestServer {
    /// `POST path` with a JSON body; returns the status and the JSON answer.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.client.post(self.url(path)).json(body).send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// `DELETE path`; returns the status and the JSON answer.
    pub async fn delete_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.client.delete(self.url(path)).send().await.expect("DELETE");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Polls an operation (by full name) until it is done, at most 60 s; returns it.
    pub async fn wait_operation(&self, name: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, op) = self.get_json(&format!("/v1/{name}")).await;
            assert_eq!(status, 200, "{op}");
            if op["done"] == true {
                return op;
            }
            assert!(std::time::Instant::now() < deadline, "operation {name} not done after 60 s: {op}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls job `job` of project `p` until it is in one of `states` (at most 120 s); returns it.
    pub async fn wait_job(&self, job: &str, states: &[&str]) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get_json(&format!("/v1/projects/p/jobs/{job}")).await;
            assert_eq!(status, 200, "{body}");
            if states.iter().any(|s| body["state"] == *s) {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "job {job} never reached {states:?}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates model `model` in project `p`.
    pub async fn create_model(&self, model: &str) {
        let (status, body) = self.post_json("/v1/projects/p/models", &serde_json::json!({"name": model})).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Deploys the fixture model `fixture` as `p/model/version` and waits; returns the operation.
    pub async fn deploy(&self, model: &str, version: &str, fixture: &str) -> serde_json::Value {
        let dir = self.stage_fixture(fixture);
        self.deploy_uri(model, version, &format!("file://{}", dir.display())).await
    }

    /// Creates version `p/model/version` from `uri` and waits; returns the finished operation.
    pub async fn deploy_uri(&self, model: &str, version: &str, uri: &str) -> serde_json::Value {
        let (status, op) = self
            .post_json(
                &format!("/v1/projects/p/models/{model}/versions"),
                &serde_json::json!({"name": version, "deploymentUri": uri}),
            )
            .await;
        assert_eq!(status, 200, "{op}");
        self.wait_operation(op["name"].as_str().expect("operation name")).await
    }

    /// Copies the example trainer `examples/<example>` (setup.py and its `trainer` package) into
    /// this server's data dir; returns the package folder to name in `packageUris`.
    pub fn stage_example(&self, example: &str) -> PathBuf {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(example);
        let package = self.data.path().join("packages").join(example);
        std::fs::create_dir_all(package.join("trainer")).expect("mkdir");
        for file in ["setup.py", "trainer/__init__.py", "trainer/task.py"] {
            std::fs::copy(source.join(file), package.join(file)).expect("copy the example");
        }
        package
    }

    /// Copies a fixture model into this server's data dir (where deployment URIs may point).
    pub fn stage_fixture(&self, fixture: &str) -> PathBuf {
        let dest = self.data.path().join("uploads").join(fixture);
        std::fs::create_dir_all(&dest).expect("mkdir");
        for entry in std::fs::read_dir(fixture_models().join(fixture)).expect("fixture") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dest.join(entry.file_name())).expect("copy");
        }
        dest
    }
}

impl TestServer {
    /// Writes a trainer package folder `name` (module `name.task`) into the server's data dir,
    /// where package URIs may point; returns the folder.
    pub fn trainer(&self, name: &str, source: &str) -> PathBuf {
        let root = self.data.path().join("packages").join(name);
        std::fs::create_dir_all(root.join(name)).expect("mkdir");
        std::fs::write(root.join(name).join("__init__.py"), "").expect("init");
        std::fs::write(root.join(name).join("task.py"), source).expect("task");
        root
    }

    /// Submits training job `job` in project `p`; returns the status and the answer.
    pub async fn submit_training(&self, job: &str, input: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_json("/v1/projects/p/jobs", &serde_json::json!({"jobId": job, "trainingInput": input})).await
    }
}
