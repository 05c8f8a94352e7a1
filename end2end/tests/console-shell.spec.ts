import { expect, test } from "@playwright/test";

const base = () => process.env.ANNEAL_URL!;

test("the console renders on the server and hydrates in the browser", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("response", (response) => {
    if (response.status() >= 400) errors.push(`${response.status()} ${response.url()}`);
  });

  await page.goto(base() + "/");
  // Server-rendered content is there before any script runs.
  await expect(page.getByRole("heading", { name: "Jobs", level: 1 })).toBeVisible();
  await expect(page.getByRole("navigation", { name: "Sections" })).toBeVisible();
  // Hydration flips this attribute; only a working WASM bundle can do it.
  await expect(page.locator(".frame")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByTestId("server-facts")).toContainText("cpu");
  await page.screenshot({ path: "test-results/screenshots/jobs.png", fullPage: true });

  // Client-side navigation: the page does not reload, so a marker set on window survives.
  await page.evaluate(() => ((window as unknown as { marker: string }).marker = "still-here"));
  await page.getByRole("link", { name: "Models" }).click();
  await expect(page).toHaveURL(/\/models$/);
  await expect(page.getByRole("heading", { name: "Models", level: 1 })).toBeVisible();
  await expect(page.getByRole("link", { name: "Models" })).toHaveAttribute("aria-current", "page");
  expect(await page.evaluate(() => (window as unknown as { marker?: string }).marker)).toBe("still-here");
  await expect(page).toHaveTitle("Models · Anneal");
  await page.screenshot({ path: "test-results/screenshots/models.png", fullPage: true });

  await page.getByRole("link", { name: "Operations" }).click();
  await expect(page.getByRole("heading", { name: "Operations", level: 1 })).toBeVisible();
  await page.screenshot({ path: "test-results/screenshots/operations.png", fullPage: true });

  // A button calls a server function again and the panel updates in place.
  await page.getByRole("button", { name: "Check again" }).click();
  await expect(page.getByTestId("server-checks")).toHaveText("Checks: 2");
  await expect(page.getByTestId("server-facts")).toContainText("Version");

  expect(errors).toEqual([]);
});

test("an unknown console page says so with a 404", async ({ page }) => {
  const response = await page.goto(base() + "/no-such-page");
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "Page not found" })).toBeVisible();
});

test("the page is keyboard navigable", async ({ page }) => {
  await page.goto(base() + "/jobs");
  await expect(page.locator(".frame")).toHaveAttribute("data-hydrated", "true");
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Anneal" })).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("textbox", { name: "Project" })).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("button", { name: "Log out" })).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Jobs" })).toBeFocused();
});
