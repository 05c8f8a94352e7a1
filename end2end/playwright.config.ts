import { resolve } from "node:path";
import { defineConfig } from "@playwright/test";

// Debian's Chromium (installed by `make test`); Playwright never downloads a browser here.
const chromiumArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export default defineConfig({
  testDir: "./tests",
  timeout: 30_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  outputDir: "test-results",
  globalSetup: "./global-setup.ts",
  use: {
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: chromiumArgs,
    },
    // The admin session global-setup.ts logs in (login.spec.ts starts without one).
    storageState: resolve(__dirname, ".auth/admin.json"),
    screenshot: "only-on-failure",
    trace: "off",
  },
});
