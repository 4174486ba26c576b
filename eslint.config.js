// Lint: type-aware typescript-eslint everywhere, and purity fences around the two inner layers (DESIGN §5):
// - src/core: pure state machines. No node:* at all, no timers, clock, randomness, process or Buffer, and
//   none of the outer layers, protocol/ included (core/session.ts is generic over the payloads it carries).
// - src/protocol: message types, the codec and the wire-bound session. It may import core/ (pure, values
//   too), @msgpack/msgpack, and node:buffer alone among Node's modules (isUtf8 and latin1 decoding run
//   natively; Buffer must be imported from it, the global stays fenced); like the core it gets no
//   timers, clock, randomness, process, sockets or files, and none of the driver layers. Secrets and
//   proofs (node:crypto) stay in the drivers that own them.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

const NODE_BUILTINS = ["fs", "net", "tls", "dgram", "os", "crypto", "child_process", "timers", "events", "worker_threads", "perf_hooks"];

/** The rules that keep `dir` pure; `allowedNodeModules` are the only node:* specifiers it may import. */
function purityFence(dir, { allowedNodeModules, forbiddenLayers }) {
  const layer = dir;
  const nodeImports = allowedNodeModules.length === 0 ? ["node:*"] : ["node:*", ...allowedNodeModules.map((name) => `!${name}`)];
  return {
    files: [`${dir}/**/*.ts`],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { group: nodeImports, message: `${layer} is pure: no node:* imports${allowedNodeModules.length === 0 ? "" : ` except ${allowedNodeModules.join(", ")}`}.` },
            {
              group: forbiddenLayers.map((name) => `**/${name}/**`),
              message: `${layer} is pure: it may not import ${forbiddenLayers.join("/, ")}/.`,
            },
          ],
          paths: NODE_BUILTINS.map((name) => ({ name, message: `${layer} is pure: no Node built-ins.` })),
        },
      ],
      "no-restricted-globals": [
        "error",
        ...["setTimeout", "setInterval", "setImmediate", "clearTimeout", "clearInterval", "queueMicrotask"].map(
          (name) => ({ name, message: `${layer} is pure: time is an input.` }),
        ),
        { name: "process", message: `${layer} is pure: no process.` },
        { name: "Date", message: `${layer} is pure: the clock is an input.` },
        { name: "performance", message: `${layer} is pure: the clock is an input.` },
        { name: "Buffer", message: `${layer} is pure: use Uint8Array (protocol/: import Buffer from node:buffer).` },
      ],
      "no-restricted-properties": [
        "error",
        { object: "Math", property: "random", message: `${layer} is pure: randomness is an input.` },
      ],
    },
  };
}

export default tseslint.config(
  { ignores: ["dist/**", ".bench-build/**", "node_modules/**", "tmp/**", "eslint.config.js", "scripts/**"] },
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
  purityFence("src/core", {
    allowedNodeModules: [],
    forbiddenLayers: ["io", "runtime", "store", "client", "cli", "protocol", "bench"],
  }),
  purityFence("src/protocol", {
    allowedNodeModules: ["node:buffer"],
    forbiddenLayers: ["io", "runtime", "store", "client", "cli", "bench"],
  }),
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
