// Lint: type-aware typescript-eslint everywhere, and a purity fence around src/core (DESIGN §5):
// the core may not touch node:*, timers, the clock, randomness, process, or the driver layers.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "tmp/**", "eslint.config.js", "scripts/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          allowForKnownSafeCalls: [
            { from: "package", package: "node:test", name: ["test", "it", "describe", "suite", "before", "after", "beforeEach", "afterEach"] },
          ],
        },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/restrict-template-expressions": "off",
      "@typescript-eslint/no-non-null-assertion": "off",
    },
  },
  {
    files: ["src/core/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { group: ["node:*"], message: "src/core is pure: no node:* imports." },
            {
              group: ["**/io/**", "**/runtime/**", "**/store/**", "**/client/**", "**/cli/**"],
              message: "src/core is pure: no driver imports.",
            },
          ],
          paths: ["fs", "net", "dgram", "os", "crypto", "child_process", "timers", "events"].map((name) => ({
            name,
            message: "src/core is pure: no Node built-ins.",
          })),
        },
      ],
      "no-restricted-globals": [
        "error",
        ...["setTimeout", "setInterval", "setImmediate", "clearTimeout", "clearInterval", "queueMicrotask"].map(
          (name) => ({ name, message: "src/core is pure: time is an input." }),
        ),
        { name: "process", message: "src/core is pure: no process." },
        { name: "Date", message: "src/core is pure: the clock is an input." },
        { name: "performance", message: "src/core is pure: the clock is an input." },
        { name: "Buffer", message: "src/core is pure: use Uint8Array." },
      ],
      "no-restricted-properties": [
        "error",
        { object: "Math", property: "random", message: "src/core is pure: randomness is an input." },
      ],
    },
  },
  {
    // examples/ are plain JavaScript, as a user writes them: linted without type information.
    files: ["examples/**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { console: "readonly", process: "readonly", performance: "readonly", structuredClone: "readonly", setTimeout: "readonly" },
    },
  },
);
