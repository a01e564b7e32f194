/**
 * The error a CSI call ends with: a gRPC status code the spec names for the case and a message
 * naming the field or volume. Handlers throw {@linkcode CsiError}; the server turns it into the
 * call's status in one place (server.ts).
 * @module
 */

import { status } from "@grpc/grpc-js";

export { status };

/** A CSI call's failure with the status code the spec names. */
export class CsiError extends Error {
  constructor(readonly code: status, message: string) {
    super(message);
    this.name = "CsiError";
  }
}

/** INVALID_ARGUMENT naming a missing required field. */
export function missing(field: string): CsiError {
  return new CsiError(status.INVALID_ARGUMENT, `${field} is required`);
}

export function invalid(message: string): CsiError {
  return new CsiError(status.INVALID_ARGUMENT, message);
}

export function notFound(message: string): CsiError {
  return new CsiError(status.NOT_FOUND, message);
}
