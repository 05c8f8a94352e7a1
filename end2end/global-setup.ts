// Starts a real `anneal serve` on a free port with a temporary data directory for the whole run,
// and stops it afterwards. Tests read its address from ANNEAL_URL.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

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

  return async () => {
    child.kill("SIGTERM");
    await new Promise((done) => child.once("exit", done));
    rmSync(dataDir, { recursive: true, force: true });
  };
}
