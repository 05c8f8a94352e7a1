// Starts a real `anneal serve` on a free port with a temporary data directory for the whole run,
// and stops it afterwards. Tests read its address from ANNEAL_URL and the admin token it made on
// first start (the file `admin.token` in its data dir) from ANNEAL_TOKEN. It also logs in once
// through the console's login form and saves that session as the storage state every test
// starts with (login.spec.ts starts without it).
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { request } from "@playwright/test";

/// Where the logged-in storage state is written (the config points `use.storageState` here).
const storageStatePath = resolve(__dirname, ".auth/admin.json");

export default async function globalSetup(): Promise<() => Promise<void>> {
  const binary = process.env.ANNEAL_BIN ?? resolve(__dirname, "../target/release/anneal");
  const dataDir = mkdtempSync(join(tmpdir(), "anneal-e2e-"));
  // The example trainer package lives in the repository; let the server read it.
  const examples = resolve(__dirname, "../examples");
  const child = spawn(binary, ["serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ANNEAL_STORAGE_ROOTS: JSON.stringify([examples]), ANNEAL_LOG: "warn" },
    // Run from elsewhere than the repository, to prove the binary finds its console assets.
    cwd: tmpdir(),
  });

  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error("anneal did not print its address within 60 s")), 60_000);
    let buffered = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const match = buffered.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (match) {
        clearTimeout(timer);
        resolveUrl(match[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`anneal exited early with code ${code}`));
    });
  });
  process.env.ANNEAL_URL = url;
  process.env.ANNEAL_DATA_DIR = dataDir;
  process.env.ANNEAL_EXAMPLES = examples;
  const token = readFileSync(join(dataDir, "admin.token"), "utf8").trim();
  process.env.ANNEAL_TOKEN = token;

  // One login through the console's form, as a browser on the server's own origin sends it.
  const context = await request.newContext({ baseURL: url });
  const login = await context.post("/console/login", {
    form: { token, next: "/" },
    headers: { Origin: url },
    maxRedirects: 0,
  });
  if (login.status() !== 303 || !(login.headers()["set-cookie"] ?? "").includes("anneal_session=")) {
    throw new Error(`logging in with the admin token failed: ${login.status()} ${await login.text()}`);
  }
  mkdirSync(dirname(storageStatePath), { recursive: true });
  await context.storageState({ path: storageStatePath });
  await context.dispose();

  return async () => {
    child.kill("SIGTERM");
    await new Promise((done) => child.once("exit", done));
    rmSync(dataDir, { recursive: true, force: true });
  };
}
