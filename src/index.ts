/** keylock's public exports (DESIGN §6). */
export { type LockMode } from "./core/modes.js";
export { KeylockError, ProtocolError, type ErrorCode } from "./core/errors.js";
