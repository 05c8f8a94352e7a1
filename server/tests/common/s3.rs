//! An S3-compatible server for the object-storage tests: moto's server (PyPI's `moto[server]`,
//! installed into `.venv` by `make`), started per test on 127.0.0.1 and killed when dropped. Its
//! objects live in its memory, so every test starts with an empty store.

use std::path::Path;
use std::time::Duration;

use anneal::storage::{AwsEnvironment, BucketConfig, Buckets, ObjectUri};

/// A running moto server.
pub struct S3Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl S3Server {
    /// Starts moto on a free loopback port and waits until it answers.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts moto with extra environment variables (`INITIAL_NO_AUTH_ACTION_COUNT=0` makes it
    /// check credentials).
    pub async fn start_with(envs: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let mut command = std::process::Command::new(super::python());
        command
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().expect("start moto_server (run `make test` to set up .venv)");
        let server = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while reqwest::get(&server.endpoint).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not start on {}", server.endpoint);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// The configuration of bucket `name` on this server, with `prefixes` and any credentials.
    pub fn bucket(&self, name: &str, prefixes: &[&str]) -> BucketConfig {
        BucketConfig {
            name: name.into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            session_token: None,
            allow_http: true,
            virtual_hosted_style: false,
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            projects: Default::default(),
        }
    }

    /// `config` with credentials `<project>-key`/`<project>-secret` for each of `projects`'
    /// trainers (moto takes any keys unless it checks them).
    pub fn with_projects(mut config: BucketConfig, projects: &[&str]) -> BucketConfig {
        for project in projects {
            config.projects.insert(
                (*project).to_owned(),
                anneal::storage::ProjectKeys {
                    access_key_id: format!("{project}-key"),
                    secret_access_key: format!("{project}-secret"),
                    session_token: None,
                },
            );
        }
        config
    }

    /// `ANNEAL_BUCKETS` for these bucket configurations (inline TOML).
    pub fn buckets_env(configs: &[BucketConfig]) -> String {
        let tables: Vec<String> = configs
            .iter()
            .map(|c| {
                let prefixes: Vec<String> = c.prefixes.iter().map(|p| format!("{p:?}")).collect();
                let projects: Vec<String> = c
                    .projects
                    .iter()
                    .map(|(p, k)| {
                        format!("{p:?}={{access_key_id={:?}, secret_access_key={:?}}}", k.access_key_id, k.secret_access_key)
                    })
                    .collect();
                format!(
                    "{{name={:?}, endpoint={:?}, region=\"us-east-1\", access_key_id={:?}, secret_access_key={:?}, allow_http=true, prefixes=[{}], projects={{{}}}}}",
                    c.name,
                    c.endpoint.clone().unwrap_or_default(),
                    c.access_key_id.clone().unwrap_or_default(),
                    c.secret_access_key.clone().unwrap_or_default(),
                    prefixes.join(", "),
                    projects.join(", ")
                )
            })
            .collect();
        format!("[{}]", tables.join(", "))
    }

    /// Creates bucket `name` (S3's `PUT /<bucket>`).
    pub async fn create_bucket(&self, name: &str) {
        let response =
            reqwest::Client::new().put(format!("{}/{name}", self.endpoint)).send().await.expect("PUT bucket");
        assert!(response.status().is_success(), "create bucket {name}: {}", response.status());
    }

    /// A client of this server's bucket `name` (the same code Anneal uses).
    pub fn client(&self, name: &str) -> Buckets {
        Buckets::open(&[self.bucket(name, &[])], &AwsEnvironment::default()).expect("bucket client")
    }

    /// Uploads the files under `dir` to `s3://<bucket>/<prefix>/…`.
    pub async fn upload_tree(&self, bucket: &str, dir: &Path, prefix: &str) {
        let uri = ObjectUri::parse("test", &format!("s3://{bucket}/{prefix}")).expect("uri");
        self.client(bucket).upload_tree(dir, &uri).await.expect("upload");
    }

    /// Uploads `bytes` as `s3://<bucket>/<key>`.
    pub async fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let file = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(file.path(), bytes).expect("write");
        let uri = ObjectUri::parse("test", &format!("s3://{bucket}/{key}")).expect("uri");
        self.client(bucket).upload(file.path(), &uri).await.expect("upload");
    }

    /// The keys under `s3://<bucket>/<prefix>`, in order.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let uri = ObjectUri::parse("test", &format!("s3://{bucket}/{prefix}")).expect("uri");
        self.client(bucket).list(&uri).await.expect("list").into_iter().map(|m| m.location.to_string()).collect()
    }

    /// The object `s3://<bucket>/<key>` as text.
    pub async fn text(&self, bucket: &str, key: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = ObjectUri::parse("test", &format!("s3://{bucket}/{key}")).expect("uri");
        let file = dir.path().join("object");
        self.client(bucket).download(&uri, &file).await.expect("download");
        std::fs::read_to_string(file).expect("utf8")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
