import { expect, test } from "@playwright/test";

// Logging in to the console with a token, and out again, in a browser that has no session yet.

const base = () => process.env.ANNEAL_URL!;

test.use({ storageState: { cookies: [], origins: [] } });

test("a page without a session lands on the login page", async ({ page }) => {
  await page.goto(base() + "/projects/default/models");
  await expect(page).toHaveURL(/\/login\?next=%2Fprojects%2Fdefault%2Fmodels$/);
  await expect(page.getByRole("heading", { name: "Log in to Anneal" })).toBeVisible();
  // Nothing of the console shows before logging in.
  await expect(page.getByRole("navigation", { name: "Sections" })).toHaveCount(0);
  await expect(page.locator(".frame")).toHaveAttribute("data-hydrated", "true");
});

test("a wrong token shows an error, the right one logs in, and logging out ends the session", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });

  await page.goto(base() + "/projects/default/jobs");
  await expect(page).toHaveURL(/\/login\?next=/);
  await page.getByLabel("API token").fill("ann_0123456789abcdef_not-a-token");
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page).toHaveURL(/failed=token/);
  await expect(page.getByRole("alert")).toContainText("That token is not valid");
  expect((await page.context().cookies()).map((c) => c.name)).not.toContain("anneal_session");

  await page.getByLabel("API token").fill(process.env.ANNEAL_TOKEN!);
  await page.getByRole("button", { name: "Log in" }).click();
  // Back where the browser wanted to go, as the admin token.
  await expect(page).toHaveURL(/\/projects\/default\/jobs$/);
  await expect(page.getByRole("heading", { name: "Jobs", level: 1 })).toBeVisible();
  await expect(page.getByTestId("session")).toContainText("admin (first start)");
  await expect(page.getByTestId("session")).toContainText("admin");
  const cookie = (await page.context().cookies()).find((c) => c.name === "anneal_session");
  expect(cookie?.httpOnly).toBe(true);
  expect(cookie?.sameSite).toBe("Strict");
  expect(await page.evaluate(() => document.cookie)).not.toContain("anneal_session");

  // Only a hydrated page (the WASM bundle, under the page's Content-Security-Policy) can call a
  // server function from a button.
  await expect(page.locator(".frame")).toHaveAttribute("data-hydrated", "true");
  await page.getByRole("button", { name: "Check again" }).click();
  await expect(page.getByTestId("server-checks")).toHaveText("Checks: 2");
  await expect(page.getByTestId("server-facts")).toContainText("Version");
  await page.screenshot({ path: "test-results/screenshots/logged-in.png", fullPage: true });

  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page).toHaveURL(/\/login$/);
  await page.goto(base() + "/projects/default/jobs");
  await expect(page).toHaveURL(/\/login\?next=/);
  expect(errors).toEqual([]);
});
