import { createHash, randomBytes } from "node:crypto";

/** A fresh store key of the real shape (64 hex characters), unique per call. */
export function randomKey(): string {
	return createHash("sha256").update(randomBytes(32)).digest("hex");
}

/** A short random suffix for per-run table names and key prefixes. */
export function runId(): string {
	return randomBytes(4).toString("hex");
}

export function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}
