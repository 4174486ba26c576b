/** keylock's public exports (DESIGN §6). */
export {
  connect,
  LockClient,
  LockHandle,
  type ConnectOptions,
  type AcquireOptions,
  type AcquireMode,
  type InvalidateEvent,
  type LockClientEvents,
  type ClientLogger,
  type ClientStats,
} from "./client/client.js";
export { CoherentCache, type CoherentCacheOptions } from "./client/cache.js";
export { type LockMode } from "./core/modes.js";
export { KeylockError, ProtocolError, type ErrorCode } from "./core/errors.js";
export { type ClientTlsOptions } from "./io/tcp.js";
export { connectAdmin, AdminClient, type AdminOptions } from "./client/admin.js";
export {
  type AdminStatus,
  type AdminMember,
  type AdminLockRow,
  type AdminStatsRow,
  type AdminQueryName,
} from "./protocol/admin.js";
