//! The sandbox for user code, tried as an attacker would: a trainer and a pickled model (which
//! runs code as it loads) try to read `admin.token`, the database, another project's stored
//! model and the server's environment, to list the data dir, to create a file in it and to
//! signal the server. Every attempt must fail, with the server running as root (replicas then
//! also run as a uid of their own) and with the server running as an unprivileged user, where
//! only the sandbox stands between them. Also: what a trainer starts with `setsid` ends with its
//! job, however the job ends.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};

/// Whether this test process runs as root (effective uid 0, from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false)
}

/// Python: `probe(targets)` tries each attack and returns one line per attempt,
/// `<label>: denied (<error>)`, `<label>: missing`, or `<label>: DONE …` when it worked.
/// Targets come as `label=path`; the server is found as the nearest ancestor running `serve`.
const PROBE: &str = r#"
import os

def _server_pid():
    pid = os.getppid()
    while pid > 1:
        try:
            cmdline = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
        except OSError:
            return None
        if any(arg.endswith(b"anneal") for arg in cmdline) and b"serve" in cmdline:
            return pid
        pid = int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[1])
    return None

def probe(targets, data_dir):
    out = []
    def attempt(label, action):
        try:
            result = action()
            out.append("%s: DONE %r" % (label, result))
        except FileNotFoundError:
            out.append("%s: missing" % label)
        except OSError as e:
            out.append("%s: denied (%s)" % (label, type(e).__name__))
    for label, path in targets:
        attempt(label, lambda path=path: open(path, "rb").read(40))
    attempt("list data dir", lambda: os.listdir(data_dir))
    def create():
        with open(os.path.join(data_dir, "written-by-user-code"), "w") as f:
            f.write("x")
        return "created"
    attempt("create in data dir", create)
    server = _server_pid()
    out.append("server found: %s" % (server is not None))
    if server is not None:
        attempt("server environ", lambda: open("/proc/%d/environ" % server, "rb").read(40))
        attempt("signal server", lambda: os.kill(server, 0))
    return out
"#;

/// What the attacks aim at in the server's data dir (and another project's stored model).
fn targets(data: &Path, other_model: &Path) -> Vec<(String, PathBuf)> {
    vec![
        ("admin token".into(), data.join("admin.token")),
        ("database".into(), data.join("anneal.db")),
        ("other project's model".into(), other_model.to_path_buf()),
        ("replica ids".into(), data.join("storage/replica-ids")),
    ]
}

/// Checks the probe's lines: every existing target denied, nothing created, the server found and
/// neither its environment nor a signal reached it, and the admin token nowhere in `text`.
fn assert_all_denied(server: &TestServer, targets: &[(String, PathBuf)], text: &str) {
    let token = server.admin_token();
    assert!(!text.contains(token), "the admin token leaked:\n{text}");
    for (label, path) in targets {
        if path.exists() {
            assert!(text.contains(&format!("{label}: denied")), "{label} ({}) was not denied:\n{text}", path.display());
        }
    }
    for label in ["list data dir", "create in data dir", "server environ", "signal server"] {
        assert!(text.contains(&format!("{label}: denied")), "{label} was not denied:\n{text}");
    }
    assert!(text.contains("server found: True"), "{text}");
    assert!(!server.data.path().join("written-by-user-code").exists(), "user code created a file in the data dir");
}

/// Deploys a small scikit-learn model as project `other`'s version and returns its stored copy.
async fn other_projects_model(server: &TestServer) -> PathBuf {
    let dir = server.data.path().join("uploads/other-model");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = format!(
        "import joblib\nfrom sklearn.linear_model import LinearRegression\nm = LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])\njoblib.dump(m, {:?})\n",
        dir.join("model.joblib").display().to_string()
    );
    python(&script);
    let (status, body) = server.post_json("/v1/projects/other/models", &json!({"name": "m"})).await;
    assert_eq!(status, 200, "{body}");
    let done = create_version(server, "other", "v1", &dir, json!({"framework": "SCIKIT_LEARN"})).await;
    assert!(done["error"].is_null(), "{done}");
    let models = server.data.path().join("storage/models/other/m");
    let stored = std::fs::read_dir(&models).expect("stored").flatten().map(|e| e.path()).next().expect("a copy");
    stored.join("model.joblib")
}

/// Creates version `name` of model `m` in `project` from `dir`, with `fields` added to the
/// request, and waits: the finished operation.
async fn create_version(server: &TestServer, project: &str, name: &str, dir: &Path, mut fields: Value) -> Value {
    fields["name"] = json!(name);
    fields["deploymentUri"] = json!(dir.display().to_string());
    let (status, op) = server.post_json(&format!("/v1/projects/{project}/models/m/versions"), &fields).await;
    assert_eq!(status, 200, "{op}");
    server.wait_operation(op["name"].as_str().expect("name")).await
}

/// Runs `script` with the project's Python, from a file (TorchScript compiles from source).
fn python(script: &str) {
    let file = tempfile::Builder::new().suffix(".py").tempfile().expect("script file");
    std::fs::write(file.path(), script).expect("write the script");
    let status = std::process::Command::new(common::python()).arg(file.path()).status().expect("python");
    assert!(status.success(), "python failed on:\n{script}");
}

async fn job_log(server: &TestServer, job: &str) -> String {
    let (_, logs) = server.get_json(&format!("/v1/projects/p/jobs/{job}/logs")).await;
    let lines: Vec<String> = logs["lines"]
        .as_array()
        .map(|lines| lines.iter().map(|l| l["text"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    lines.join("\n")
}

/// The trainer and the pickle attack; the server is `server` (root's or an unprivileged user's).
async fn attack(server: &TestServer) {
    let data = server.data.path().canonicalize().expect("data dir");
    let other_model = other_projects_model(server).await;
    let targets = targets(&data, &other_model);
    let listed: Vec<String> = targets.iter().map(|(l, p)| format!("({l:?}, {:?})", p.display().to_string())).collect();
    let call = format!("probe([{}], {:?})", listed.join(", "), data.display().to_string());

    // A trainer prints what it got.
    let trainer = server.trainer("attacker", &format!("{PROBE}\nprint('\\n'.join({call}))\n"));
    let (status, body) = server
        .submit_training("attack_1", json!({"packageUris": [trainer.display().to_string()], "pythonModule": "attacker.task", "region": "us-central1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("attack_1", &["SUCCEEDED", "FAILED", "CANCELLED"]).await;
    let text = job_log(server, "attack_1").await;
    println!("the trainer's attempts:\n{text}");
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{text}");
    assert_all_denied(server, &targets, &text);

    // A pickle runs the same code when the server's worker loads it, and says what it got in
    // the error the version fails with.
    let dir = data.join("uploads/pickle");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let source = format!("{PROBE}\nraise RuntimeError(' ; '.join({call}))\n");
    let script = format!(
        "import pickle\nclass Attack:\n    def __reduce__(self):\n        return (exec, ({source:?}, {{}}))\npickle.dump(Attack(), open({:?}, 'wb'))\n",
        dir.join("model.pkl").display().to_string()
    );
    python(&script);
    let (status, body) = server.post_json("/v1/projects/p/models", &json!({"name": "m"})).await;
    assert_eq!(status, 200, "{body}");
    let done = create_version(server, "p", "pickle", &dir, json!({"framework": "SCIKIT_LEARN"})).await;
    let text = done["error"]["message"].as_str().unwrap_or_default().replace(" ; ", "\n");
    println!("the pickle's attempts:\n{text}");
    assert_all_denied(server, &targets, &text);

    torchscript_attack(server, &targets).await;
}

/// A TorchScript model is code too: `aten::from_file` reads any file the process can, and with
/// `shared=True` creates one. Each model reads (or maps) `path` and returns its bytes as numbers.
async fn torchscript_attack(server: &TestServer, targets: &[(String, PathBuf)]) {
    let data = server.data.path().canonicalize().expect("data dir");
    let mapped = data.join("mapped-by-a-model");
    let mut models: Vec<(String, PathBuf, bool)> = targets.iter().map(|(l, p)| (l.clone(), p.clone(), false)).collect();
    models.push(("new shared mapping".into(), mapped.clone(), true));
    for (index, (label, path, shared)) in models.iter().enumerate() {
        let dir = data.join(format!("uploads/torch-{index}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let script = format!(
            "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n        t = torch.from_file({path:?}, {shared}, 16, dtype=torch.uint8)\n        return t.to(torch.float32).unsqueeze(0).expand(x.shape[0], 16)\ntorch.jit.script(M()).save({out:?})\n",
            path = path.display().to_string(),
            shared = if *shared { "True" } else { "False" },
            out = dir.join("model.pt").display().to_string(),
        );
        python(&script);
        let version = format!("torch{index}");
        let done = create_version(server, "p", &version, &dir, json!({})).await;
        assert!(done["error"].is_null(), "the model loads (it reads nothing until it runs): {done}");
        let response = server
            .client
            .post(server.url(&format!("/v1/projects/p/models/m/versions/{version}:predict")))
            .json(&json!({"instances": [[1.0]]}))
            .send()
            .await
            .expect("predict");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        println!("TorchScript reading {label}: {status} {text}");
        assert_ne!(status, 200, "a TorchScript model read {label}: {text}");
        assert!(!text.contains(server.admin_token()), "{text}");
    }
    assert!(!mapped.exists(), "a TorchScript model created a file in the data dir");
}

#[tokio::test]
async fn user_code_reaches_nothing_of_the_server() {
    let server = TestServer::start().await;
    attack(&server).await;
}

/// The same attacks with the server running as `nobody`: no uid per project, the sandbox alone.
#[tokio::test]
async fn user_code_reaches_nothing_of_an_unprivileged_server() {
    if !running_as_root() {
        println!("skipped: not root (the test above ran as this unprivileged user already)");
        return;
    }
    // The runtime Python may live under /root (pyenv): an unprivileged server must reach it, as
    // a root server makes its replicas reach it.
    grant_search_on_the_way_to(&common::python());
    let server = TestServer::start_as(65534, 65534, &[], &[]).await;
    attack(&server).await;
}

/// Gives others search permission (never read) on each folder above `path` that lacks it.
fn grant_search_on_the_way_to(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let real = path.canonicalize().expect("python");
    for folder in real.ancestors().skip(1) {
        let mode = std::fs::metadata(folder).expect("folder").permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(mode | 0o001)).expect("chmod o+x");
        }
    }
}

/// A trainer that starts a `setsid` child (a new session: out of the replica's process group)
/// and, with `--double-fork`, a double-forked one; each child records its pid in the job dir and
/// sleeps. The trainer then sleeps `--then-sleep` seconds and exits 0.
const ESCAPER: &str = r#"
import os, subprocess, sys, time
job_dir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--job-dir=")][0]
sleep = float([a.split("=", 1)[1] for a in sys.argv if a.startswith("--then-sleep=")][0])
child = subprocess.Popen([sys.executable, "-c", "import os, time\nopen(%r, 'w').write(str(os.getpid()))\ntime.sleep(600)" % os.path.join(job_dir, "setsid.pid")], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(os.path.join(job_dir, "double.pid"), "w").write(str(os.getpid()))
        time.sleep(600)
    os._exit(0)
for name in ("setsid.pid", "double.pid"):
    while not os.path.exists(os.path.join(job_dir, name)):
        time.sleep(0.05)
print("children started", flush=True)
time.sleep(sleep)
"#;

fn pids_in(job_dir: &Path) -> Vec<i32> {
    ["setsid.pid", "double.pid"]
        .iter()
        .map(|f| std::fs::read_to_string(job_dir.join(f)).expect("pid file").trim().parse().expect("pid"))
        .collect()
}

/// Whether `pid` is alive (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

async fn gone_within(pids: &[i32], limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if !pids.iter().any(|p| alive(*p)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn submit_escaper(server: &TestServer, job: &str, then_sleep: u32) -> PathBuf {
    let trainer = server.trainer("escaper", ESCAPER);
    let job_dir = server.data.path().join("outputs").join(job);
    let (status, body) = server
        .submit_training(
            job,
            json!({"packageUris": [trainer.display().to_string()], "pythonModule": "escaper.task", "region": "us-central1",
                   "jobDir": job_dir.display().to_string(), "args": [format!("--then-sleep={then_sleep}")]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    job_dir
}

async fn wait_for_children(server: &TestServer, job: &str, job_dir: &Path) -> Vec<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(job_dir.join("setsid.pid").exists() && job_dir.join("double.pid").exists()) {
        assert!(std::time::Instant::now() < deadline, "the children never started:\n{}", job_log(server, job).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids = pids_in(job_dir);
    assert!(pids.iter().all(|p| alive(*p)), "the children run");
    pids
}

#[tokio::test]
async fn what_a_trainer_starts_ends_with_its_job() {
    let server = TestServer::start().await;

    // The job succeeds: its master exits 0 with its children still running (two seconds after
    // they started, so the test sees them running before the sandbox ends them with the job).
    let job_dir = submit_escaper(&server, "escape_done", 2).await;
    let pids = wait_for_children(&server, "escape_done", &job_dir).await;
    let done = server.wait_job("escape_done", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{}", job_log(&server, "escape_done").await);
    assert!(gone_within(&pids, Duration::from_secs(10)).await, "the children outlived their SUCCEEDED job: {pids:?}");

    // The job is cancelled while everything runs.
    let job_dir = submit_escaper(&server, "escape_cancel", 600).await;
    let pids = wait_for_children(&server, "escape_cancel", &job_dir).await;
    let (status, body) = server.post_json("/v1/projects/p/jobs/escape_cancel:cancel", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("escape_cancel", &["CANCELLED", "FAILED", "SUCCEEDED"]).await;
    assert_eq!(done["state"], "CANCELLED", "{done}");
    assert!(gone_within(&pids, Duration::from_secs(15)).await, "the children outlived their cancelled job: {pids:?}");

    // The server is killed while the job runs, then started again on the same data.
    let job_dir = submit_escaper(&server, "escape_crash", 600).await;
    let pids = wait_for_children(&server, "escape_crash", &job_dir).await;
    let data = server.crash_keeping_data().await;
    let server = TestServer::start_in(data, &[], &[]).await;
    let done = server.wait_job("escape_crash", &["FAILED", "CANCELLED", "SUCCEEDED"]).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert!(gone_within(&pids, Duration::from_secs(15)).await, "the children outlived the server's crash: {pids:?}");
}

/// Confinement is on by default, and `sandbox = "off"` is refused unless auth is off on loopback.
#[tokio::test]
async fn the_sandbox_is_turned_off_only_without_auth_on_loopback() {
    let (code, _, stderr) = common::run_anneal(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", "/nonexistent-anneal-test"],
        &[("ANNEAL_SANDBOX", "off")],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("sandbox = \"off\"") && stderr.contains("auth off"), "{stderr}");

    let server = TestServer::start_with(&["--no-auth"], &[("ANNEAL_SANDBOX", "off")]).await;
    assert_eq!(server.get("/healthz").await.status(), 200);
    assert!(server.stderr().contains("runs unconfined"), "{}", server.stderr());
}

/// As root, a replica's machine type is its memory and CPU limit (a control group of its own): a
/// trainer that allocates past its 1 GB ends FAILED saying so, and a fork bomb is held by the
/// process limit (and its one CPU) while the server keeps answering, and ends with its job.
#[tokio::test]
async fn replicas_are_held_to_their_machine_types_limits() {
    if !running_as_root() {
        println!("skipped: not root (control groups need root)");
        return;
    }
    let server = TestServer::start().await;
    if server.stderr().contains("no control groups") {
        println!("skipped: this host mounts no control groups");
        return;
    }
    let hog = server.trainer("hog", "data = b'x' * (3 * 10**9)\nprint('allocated', len(data))\n");
    let (status, body) = server
        .submit_training(
            "hog_1",
            json!({"packageUris": [hog.display().to_string()], "pythonModule": "hog.task", "region": "us-central1",
                   "scaleTier": "CUSTOM", "masterType": "mls1-c1-m1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("hog_1", &["SUCCEEDED", "FAILED", "CANCELLED"]).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let message = done["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("exceeded its memory limit of 1 GB"), "{message}");

    // Every process forks until the limit refuses it, then tries again ten times a second.
    let bomb = server.trainer(
        "bomb",
        "import os, time\nprint('forking', flush=True)\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.1)\n",
    );
    let _cleanup = KillTagged("bomb_1");
    let (status, body) = server
        .submit_training(
            "bomb_1",
            json!({"packageUris": [bomb.display().to_string()], "pythonModule": "bomb.task", "region": "us-central1",
                   "scaleTier": "CUSTOM", "masterType": "n1-standard-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.wait_job("bomb_1", &["RUNNING"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The server answers while the bomb runs against its limits.
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let (status, _) = server.get_json("/v1/projects/p/jobs/bomb_1").await;
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(2), "the server took {:?} to answer", started.elapsed());
    }
    let tagged = processes_tagged("bomb_1");
    assert!(tagged > 1 && tagged <= 4096, "{tagged} processes of the bomb");
    let (status, body) = server.post_json("/v1/projects/p/jobs/bomb_1:cancel", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("bomb_1", &["CANCELLED", "FAILED", "SUCCEEDED"]).await;
    assert_eq!(done["state"], "CANCELLED", "{done}");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while processes_tagged("bomb_1") > 0 {
        assert!(
            std::time::Instant::now() < until,
            "{} processes of the bomb outlived its job",
            processes_tagged("bomb_1")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Live processes whose `ANNEAL_JOB` tag names job `job`.
fn processes_tagged(job: &str) -> usize {
    tagged_pids(job).len()
}

/// The pids of live processes whose `ANNEAL_JOB` tag names job `job`.
fn tagged_pids(job: &str) -> Vec<i32> {
    let suffix = format!("|projects/p/jobs/{job}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let tagged = environ
                .split(|b| *b == 0)
                .filter_map(|var| var.strip_prefix(b"ANNEAL_JOB="))
                .any(|value| String::from_utf8_lossy(value).ends_with(&suffix));
            (tagged && alive(pid)).then_some(pid)
        })
        .collect()
}

/// Kills every process tagged with its job when dropped: a failed assertion must not leave a
/// fork bomb running on the test machine (the launcher outlives a killed test server).
struct KillTagged(&'static str);

impl Drop for KillTagged {
    fn drop(&mut self) {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let pids = tagged_pids(self.0);
            if pids.is_empty() || std::time::Instant::now() > until {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
