/**
 * The runtime-neutral crypto seam. On Node, Bun and Deno `process.getBuiltinModule` gives
 * node:crypto synchronously (hashing a token stays off the event loop's microtask queue and
 * costs about a microsecond); elsewhere (Cloudflare Workers without nodejs_compat, browsers)
 * Web Crypto is used.
 */
import type * as NodeCrypto from "node:crypto";

type GetBuiltinModule = (id: string) => unknown;

export const nodeCrypto: typeof NodeCrypto | undefined = (() => {
	const proc = (globalThis as { process?: { getBuiltinModule?: GetBuiltinModule } }).process;
	const load = proc?.getBuiltinModule;
	return typeof load === "function" ? (load("node:crypto") as typeof NodeCrypto) : undefined;
})();

// crypto.hash (Node ≥ 20.12, Bun, Deno) skips the Hash object: about half the cost per token.
const oneShotHash = typeof nodeCrypto?.hash === "function" ? nodeCrypto.hash : undefined;

// Tokens and IVs come from a pool refilled 4 KB at a time: one CSPRNG call per 128 tokens instead
// of one each (about 0.2 µs a token instead of 3). Every byte is handed out once, then zeroed.
const POOL_BYTES = 4096;
let pool: Buffer | undefined;
let poolOffset = POOL_BYTES;

/** Hands `length` fresh bytes of the pool to `read`, then zeroes them; refills the pool from the CSPRNG when it runs out. */
function fromPool<T>(length: number, read: (bytes: Buffer, start: number, end: number) => T): T {
	if (pool === undefined) pool = Buffer.allocUnsafeSlow(POOL_BYTES);
	if (poolOffset + length > POOL_BYTES) {
		nodeCrypto!.randomFillSync(pool);
		poolOffset = 0;
	}
	const start = poolOffset;
	poolOffset += length;
	const result = read(pool, start, poolOffset);
	pool.fill(0, start, poolOffset);
	return result;
}

const asBase64Url = (bytes: Buffer, start: number, end: number): string => bytes.toString("base64url", start, end);
const asCopy = (bytes: Buffer, start: number, end: number): Uint8Array => new Uint8Array(bytes.subarray(start, end));

function canUsePool(length: number): boolean {
	return nodeCrypto !== undefined && typeof Buffer === "function" && length <= POOL_BYTES;
}

/** `length` CSPRNG bytes as unpadded base64url. */
export function randomBase64Url(length: number): string {
	return canUsePool(length) ? fromPool(length, asBase64Url) : toBase64Url(randomBytes(length));
}

/**
 * Hands `use` a view of `length` fresh CSPRNG bytes, valid only during the call (they are zeroed
 * after): no array is allocated, where the pool serves them.
 */
export function withRandomBytes<T>(length: number, use: (bytes: Uint8Array) => T): T {
	return canUsePool(length) ? fromPool(length, (bytes, start, end) => use(bytes.subarray(start, end))) : use(randomBytes(length));
}

/** A new array of `length` bytes from the platform CSPRNG. */
export function randomBytes(length: number): Uint8Array {
	if (canUsePool(length)) return fromPool(length, asCopy);
	const bytes = new Uint8Array(length);
	globalThis.crypto.getRandomValues(bytes);
	return bytes;
}

/** SHA-256 of a UTF-8 string, as 64 lowercase hex characters. */
export function sha256Hex(input: string): string | Promise<string> {
	if (oneShotHash) return oneShotHash("sha256", input, "hex");
	if (nodeCrypto) return nodeCrypto.createHash("sha256").update(input).digest("hex");
	return globalThis.crypto.subtle
		.digest("SHA-256", new TextEncoder().encode(input))
		.then((digest) => toHex(new Uint8Array(digest)));
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function toHex(bytes: Uint8Array): string {
	let out = "";
	for (const byte of bytes) out += HEX[byte];
	return out;
}

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64URL_TEXT = /^[A-Za-z0-9_-]*$/;
// Node and Bun encode and decode natively, ten times faster than the loops below (sealed cookies).
const hasBuffer = typeof Buffer === "function" && typeof Buffer.from === "function";

/** Base64url without padding (RFC 4648 §5). */
export function toBase64Url(bytes: Uint8Array): string {
	if (hasBuffer) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64url");
	let out = "";
	let i = 0;
	for (; i + 2 < bytes.length; i += 3) {
		const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
		out += B64URL[n >> 18]! + B64URL[(n >> 12) & 63]! + B64URL[(n >> 6) & 63]! + B64URL[n & 63]!;
	}
	const rest = bytes.length - i;
	if (rest === 1) {
		const n = bytes[i]! << 16;
		out += B64URL[n >> 18]! + B64URL[(n >> 12) & 63]!;
	} else if (rest === 2) {
		const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
		out += B64URL[n >> 18]! + B64URL[(n >> 12) & 63]! + B64URL[(n >> 6) & 63]!;
	}
	return out;
}

const B64URL_INDEX = new Int16Array(128).fill(-1);
for (let i = 0; i < B64URL.length; i++) B64URL_INDEX[B64URL.charCodeAt(i)] = i;

/** Decodes unpadded base64url; `null` for any character outside the alphabet or an impossible length. */
export function fromBase64Url(text: string): Uint8Array | null {
	if (text.length % 4 === 1) return null;
	if (hasBuffer) {
		// Buffer skips characters outside the alphabet: check them first. The copy keeps the
		// result off Buffer's shared pool (whose other bytes its .buffer would expose).
		if (!B64URL_TEXT.test(text)) return null;
		const decoded = Buffer.from(text, "base64url");
		// set() copies in one go; new Uint8Array(decoded) would copy byte by byte.
		const out = new Uint8Array(decoded.length);
		out.set(decoded);
		return out;
	}
	const out = new Uint8Array(Math.floor((text.length * 3) / 4));
	let bits = 0;
	let value = 0;
	let o = 0;
	for (let i = 0; i < text.length; i++) {
		const code = text.charCodeAt(i);
		const digit = code < 128 ? B64URL_INDEX[code]! : -1;
		if (digit < 0) return null;
		value = (value << 6) | digit;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (value >> bits) & 0xff;
		}
	}
	return out;
}
