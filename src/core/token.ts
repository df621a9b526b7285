import { randomBase64Url, sha256Hex } from "./crypto.js";

/** Bytes of CSPRNG output in a token: 256 bits, far past any guessing. */
export const TOKEN_BYTES = 32;

const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const KEY_PATTERN = /^[0-9a-f]{64}$/;

/** A new session token: 32 random bytes, base64url (43 characters). Goes in the cookie only. */
export function generateToken(): string {
	return randomBase64Url(TOKEN_BYTES);
}

/** True if `value` has the exact shape of a token; anything else never reaches a store. */
export function isWellFormedToken(value: string): boolean {
	return TOKEN_PATTERN.test(value);
}

/** The store key for a token: SHA-256, hex. A leaked store or log hands out no live session. */
export function hashToken(token: string): string | Promise<string> {
	return sha256Hex(token);
}

/** True if `key` has the shape of a store key (64 lowercase hex characters). */
export function isWellFormedKey(key: string): boolean {
	return KEY_PATTERN.test(key);
}
