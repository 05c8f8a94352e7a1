import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { expect, Page, test } from "@playwright/test";

// The whole story in the browser against a real server: create a model, submit the example
// trainer, watch its logs stream and a metric chart gain points, deploy its model as a version,
// predict from the Test & use panel, set a default, delete a version, and see field errors.

const base = () => process.env.ANNEAL_URL!;
const shots = "test-results/screenshots";

async function hydrated(page: Page) {
  await expect(page.locator(".frame")).toHaveAttribute("data-hydrated", "true");
}

test("create, train, watch, deploy, predict, set default, delete", async ({ page }) => {
  test.setTimeout(240_000);
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));

  // Models: create one; the empty state says what to do first.
  await page.goto(base() + "/projects/default/models");
  await hydrated(page);
  await expect(page.getByText("No models yet — create one or train the example.")).toBeVisible();
  await page.locator("summary", { hasText: "Create model" }).click();
  await page.getByLabel("Name").fill("Bad Name!");
  await page.getByRole("button", { name: "Create model" }).click();
  await expect(page.locator(".field-error")).toContainText("not a valid model name");
  await page.getByLabel("Name").fill("digits");
  await page.getByLabel("Description").fill("Handwritten digits");
  await page.getByRole("button", { name: "Create model" }).click();
  await expect(page.getByTestId("models-table")).toContainText("digits");
  await page.screenshot({ path: `${shots}/models-list.png`, fullPage: true });

  // Jobs: submit the example trainer; a missing module is a field error first.
  await page.getByRole("link", { name: "Jobs" }).click();
  await expect(page.getByRole("heading", { name: "Jobs", level: 1 })).toBeVisible();
  await page.locator("summary", { hasText: "Submit training job" }).click();
  const jobDir = `${process.env.ANNEAL_DATA_DIR}/outputs/digits_1`;
  await page.getByLabel("Job id").fill("digits_1");
  await page.getByLabel("Package (folder, sdist or wheel path / file:// URI)").fill(`${process.env.ANNEAL_EXAMPLES}/digits`);
  await page.getByLabel("Arguments (space separated)").fill("--epochs 1500");
  await page.getByLabel("Job dir").fill(jobDir);
  await page.getByRole("button", { name: "Submit job" }).click();
  await expect(page.locator(".field-error")).toContainText("pythonModule is required");
  await page.screenshot({ path: `${shots}/submit-job-field-error.png`, fullPage: true });
  await page.getByLabel("Python module").fill("trainer.task");
  await page.getByRole("button", { name: "Submit job" }).click();
  await expect(page).toHaveURL(/\/projects\/default\/jobs\/digits_1$/);
  await hydrated(page);

  // Logs stream and a chart gains points while the job runs.
  const logCount = async () => Number((await page.getByTestId("log-count").innerText()).split(" ")[0]);
  await expect.poll(logCount, { timeout: 120_000 }).toBeGreaterThan(5);
  const first = await logCount();
  await expect.poll(logCount, { timeout: 60_000 }).toBeGreaterThan(first);
  const chart = page.locator('[data-testid="chart"][data-tag="accuracy"]');
  await expect(chart).toBeVisible({ timeout: 60_000 });
  const points = async () => Number(await chart.getAttribute("data-points"));
  const early = await points();
  await page.screenshot({ path: `${shots}/job-running.png`, fullPage: true });
  await expect.poll(points, { timeout: 60_000 }).toBeGreaterThan(early);
  await expect(page.getByTestId("state").first()).toHaveText("SUCCEEDED", { timeout: 120_000 });
  await expect(page.getByTestId("log")).toContainText("exported");
  await page.getByLabel("Search").fill("epoch 1500 ");
  await expect(page.getByTestId("log-count")).toHaveText("1 lines");
  await page.screenshot({ path: `${shots}/job-succeeded.png`, fullPage: true });

  // Deploy its model as a version, which becomes READY.
  await page.getByLabel("Model").fill("digits");
  await page.getByLabel("Version").fill("v1");
  await page.getByRole("button", { name: "Deploy" }).click();
  await expect(page).toHaveURL(/\/models\/digits\/versions\/v1$/);
  await expect(page.getByTestId("state").first()).toHaveText("READY", { timeout: 60_000 });

  // Test & use: the request is pre-filled from the signature; predictions come back.
  await expect(page.getByTestId("predict-request")).toHaveValue(/"instances"/);
  await page.getByRole("button", { name: "Predict" }).click();
  await expect(page.getByTestId("predict-answer")).toContainText("predictions");
  await expect(page.getByTestId("round-trip")).toContainText("ms");
  await page.getByTestId("predict-request").fill('{"instances": [[1, 2]]}');
  await page.getByRole("button", { name: "Predict" }).click();
  await expect(page.getByTestId("predict-answer")).toContainText("shape");
  await page.screenshot({ path: `${shots}/version-test-and-use.png`, fullPage: true });

  // Model page: a second version, a bad one shows its field error, set default, delete v1.
  await page.goto(base() + "/projects/default/models/digits");
  await hydrated(page);
  await page.locator("summary", { hasText: "Create version" }).click();
  await page.getByLabel("Name").fill("v2");
  await page.getByLabel("Deployment URI (a folder with model.pt)").fill("/etc");
  await page.getByRole("button", { name: "Create version" }).click();
  await expect(page.locator(".field-error")).toContainText("outside the storage roots");
  await page.getByLabel("Deployment URI (a folder with model.pt)").fill(`${jobDir}/model`);
  await page.getByRole("button", { name: "Create version" }).click();
  const versions = page.getByTestId("versions-table");
  await expect(versions.locator("tr", { hasText: "v2" })).toContainText("READY", { timeout: 60_000 });
  await page.getByRole("button", { name: "Set default v2" }).click();
  await expect(versions.locator("tr", { hasText: "v2" })).toContainText("default");
  await page.getByRole("button", { name: "Delete v1" }).click();
  await expect(versions.locator("tr", { hasText: "v1" })).toHaveCount(0, { timeout: 60_000 });
  await page.screenshot({ path: `${shots}/model-detail.png`, fullPage: true });

  // A model with versions cannot be deleted, and the page says why.
  await page.getByRole("link", { name: "Models" }).click();
  await page.getByRole("button", { name: "Delete model digits" }).click();
  await expect(page.getByTestId("models-table").getByRole("alert")).toContainText("version");

  await page.getByRole("link", { name: "Operations" }).click();
  await expect(page.getByTestId("operations-table")).toContainText("DELETE_VERSION");
  await page.screenshot({ path: `${shots}/operations-list.png`, fullPage: true });

  await page.getByRole("link", { name: "Jobs" }).click();
  await expect(page.getByTestId("jobs-table")).toContainText("digits_1");
  await page.screenshot({ path: `${shots}/jobs-list.png`, fullPage: true });
  expect(errors).toEqual([]);
});

test("pages read without JavaScript (server-rendered)", async ({ browser }) => {
  // A context made by hand gets the logged-in storage state only when it is given.
  const context = await browser.newContext({ javaScriptEnabled: false, storageState: test.info().project.use.storageState });
  const page = await context.newPage();
  await page.goto(base() + "/projects/default/jobs");
  await expect(page.getByRole("heading", { name: "Jobs", level: 1 })).toBeVisible();
  await page.goto(base() + "/projects/nothing_here/models");
  await expect(page.getByText("No models yet")).toBeVisible();
  // The story's job, with its log and charts, reads without scripts too.
  await page.goto(base() + "/projects/default/jobs/digits_1");
  await expect(page.getByTestId("log")).toContainText("exported");
  await expect(page.locator('[data-testid="chart"][data-tag="accuracy"]')).toBeVisible();
  await context.close();
});

test("a tuning job shows its trials best first and a chart of the objective by trial", async ({ page, request }) => {
  test.setTimeout(180_000);
  const response = await request.post(base() + "/v1/projects/default/jobs", {
    headers: { Authorization: `Bearer ${process.env.ANNEAL_TOKEN}` },
    data: {
      jobId: "tune_1",
      trainingInput: {
        packageUris: [`${process.env.ANNEAL_EXAMPLES}/digits`],
        pythonModule: "trainer.task",
        args: ["--epochs", "3"],
        jobDir: `${process.env.ANNEAL_DATA_DIR}/outputs/tune_1`,
        hyperparameters: {
          goal: "MAXIMIZE",
          hyperparameterMetricTag: "accuracy",
          algorithm: "GRID_SEARCH",
          maxTrials: 2,
          maxParallelTrials: 2,
          params: [{ parameterName: "learning-rate", type: "DISCRETE", discreteValues: [0.001, 0.1] }],
        },
      },
    },
  });
  expect(response.status()).toBe(200);
  await page.goto(base() + "/projects/default/jobs/tune_1");
  await hydrated(page);
  await expect(page.getByTestId("state").first()).toHaveText("SUCCEEDED", { timeout: 150_000 });
  const table = page.getByTestId("trials-table");
  await expect(table.locator("tbody tr")).toHaveCount(2);
  await expect(table.locator("tbody tr").first()).toHaveClass(/best/);
  await expect(table.locator("tbody tr").first()).toContainText("learning-rate=0.1");
  await expect(page.locator('[data-testid="chart"][data-tag="accuracy by trial"]')).toHaveAttribute("data-points", "2");
  await page.getByRole("button", { name: "Trial" }).click();
  await expect(table.locator("tbody tr").first().locator("td").first()).toHaveText("1");
  await page.screenshot({ path: `${shots}/tuning-job.png`, fullPage: true });
});

test("a training job from an uploaded package file", async ({ page }) => {
  test.setTimeout(180_000);
  // An sdist-shaped archive of the example trainer (one top folder holding setup.py).
  const archive = `${mkdtempSync(`${tmpdir()}/anneal-upload-`)}/digits-0.1.tar.gz`;
  execFileSync("tar", ["czf", archive, "--exclude=__pycache__", "--exclude=*.egg-info", "--exclude=build", "-C", `${process.env.ANNEAL_EXAMPLES}`, "digits"]);
  await page.goto(base() + "/projects/default/jobs");
  await hydrated(page);
  await page.locator("summary", { hasText: "Submit training job" }).click();
  await page.getByLabel("Job id").fill("uploaded_1");
  await page.getByLabel("…or upload a package file (sdist .tar.gz or wheel)").setInputFiles(archive);
  await page.getByLabel("Python module").fill("trainer.task");
  await page.getByLabel("Arguments (space separated)").fill("--epochs 2");
  await page.getByLabel("Job dir").fill(`${process.env.ANNEAL_DATA_DIR}/outputs/uploaded_1`);
  await page.getByRole("button", { name: "Submit job" }).click();
  await expect(page).toHaveURL(/\/jobs\/uploaded_1$/);
  await expect(page.getByTestId("state").first()).toHaveText("SUCCEEDED", { timeout: 150_000 });
  await expect(page.getByTestId("job-input")).toContainText("/uploads/default/");
  await expect(page.getByTestId("job-input")).toContainText("digits-0.1.tar.gz");
});
