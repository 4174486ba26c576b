/**
 * `keylock/testing`: real keylock clusters for your own test suites (DESIGN §6).
 *
 *   import { startCluster } from "keylock/testing";
 *   const cluster = await startCluster({ members: 3 });
 *   const client = await connect({ servers: cluster.servers });
 *   await cluster.kill((await cluster.leader()).slot, "SIGKILL");
 *   await cluster.stop();
 */
export {
  startCluster,
  TestCluster,
  type StartClusterOptions,
  type ClusterMember,
  type LeaderInfo,
} from "./cluster.js";
export type { NodeProcess } from "./process.js";
