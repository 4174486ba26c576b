export { KeylockError, ProtocolError, type ErrorCode } from "../core/errors.js";
