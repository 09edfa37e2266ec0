// The browser test (tests/browser/, compiled by `npm run build` into
// dist/tests/browser/): Debian's Chromium (scripts/install-chromium), never a
// browser Playwright downloads. `npx playwright test` after `npm run build`.
import { defineConfig } from "@playwright/test";

const root = typeof process.getuid === "function" && process.getuid() === 0;

export default defineConfig({
  testDir: "dist/tests/browser",
  testMatch: "*.spec.js",
  outputDir: "dist/playwright",
  workers: 1,
  timeout: 60_000,
  forbidOnly: !!process.env.CI,
  reporter: [["list"]],
  use: {
    browserName: "chromium",
    headless: true,
    launchOptions: {
      executablePath: process.env.CLAUDOMATOR_CHROMIUM || "/usr/bin/chromium",
      // Chromium's own sandbox refuses to start as root.
      args: root ? ["--no-sandbox"] : [],
    },
  },
});
