/**
 * The encrypted-cookie store: the whole session record lives in the cookie, sealed with
 * AES-256-GCM. Where node:crypto is reachable without an import (`process.getBuiltinModule`:
 * Node, Bun, Deno) it seals synchronously; elsewhere (Workers) it uses Web Crypto. Both derive
 * the same keys and write the same format, so either opens the other's cookies.
 */
import type * as NodeCrypto from "node:crypto";
import { fromBase64Url, nodeCrypto, randomBytes, toBase64Url, withRandomBytes } from "../core/crypto.js";
import { SessionConfigError, SessionTooLargeError } from "../core/errors.js";
import type { SealedCookieStore, StoredRecord } from "../core/store.js";
import { checkOptionKeys } from "./internal/option-keys.js";

/** Options of {@link cookieStore}. */
export interface CookieStoreOptions {
	/**
	 * Secrets of at least 32 characters, newest first: the first seals, every one is tried to
	 * unseal, so a new secret can be put in front while cookies sealed with the old one still
	 * work. Use random strings (e.g. `openssl rand -base64 32`), not passwords.
	 */
	secrets: string | readonly string[];
	/**
	 * The browser's budget for the whole cookie (`name=value`), in bytes, from 256 to 4096. The
	 * store keeps the value 64 bytes under it, room for a cookie name of up to 63 characters.
	 * @default 4096 (the most every major browser keeps)
	 */
	maxCookieBytes?: number;
}

// The store never learns the cookie name: keep room for one of up to 63 characters and "=".
const COOKIE_NAME_RESERVE = 64;

const VERSION = "v1.";
const MIN_SECRET_LENGTH = 32;
const MAX_COOKIE_BYTES = 4096;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const encoder = new TextEncoder();
// HKDF info and AES-GCM additional data: a key or a sealed value made for another purpose
// (or another format version) never opens as a session.
const KEY_INFO = encoder.encode("sessionkit cookie v1");
const ADDITIONAL_DATA = encoder.encode("sessionkit session cookie v1");
// Web Crypto hands back bytes: only UTF-8 a seal wrote opens. A leading BOM is kept, as Buffer
// keeps it (and JSON then refuses it): both paths open the same values.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A store that keeps the session in the cookie itself, encrypted and authenticated with
 * AES-256-GCM (a key per secret, derived with HKDF-SHA-256). Nothing is stored on a server.
 *
 * `unseal` resolves `null`, never rejects, for a value that was tampered with, truncated,
 * sealed with a secret no longer in the list, in another format version, or malformed. A record
 * past its deadlines unseals all the same: `createSessions` checks them on every load and
 * reports a `session-expired` event (a forged cookie is `cookie-rejected`). `seal` rejects with
 * `SessionTooLargeError` when the cookie would pass `maxCookieBytes`.
 *
 * Limits, because there is no server state: one session cannot be revoked before it expires,
 * "log out everywhere" is impossible, and `renew()` only re-seals (an old cookie stays valid
 * until its own expiry). Keep the idle timeout short.
 *
 * Throws `SessionConfigError` for a missing or short secret, a bad `maxCookieBytes`, or an option
 * it does not know.
 *
 * @example
 * const sessions = createSessions({
 *   store: cookieStore({ secrets: [process.env.SESSION_SECRET!, process.env.OLD_SESSION_SECRET!] }),
 * });
 */
export function cookieStore(options: CookieStoreOptions): SealedCookieStore {
	if (typeof options !== "object" || options === null) {
		throw new SessionConfigError("secrets", "is required: cookieStore({ secrets: [\"…at least 32 random characters…\"] }).");
	}
	checkOptionKeys(options, ["secrets", "maxCookieBytes"], "cookieStore");
	const secrets = typeof options.secrets === "string" ? [options.secrets] : options.secrets;
	if (!Array.isArray(secrets) || secrets.length === 0) {
		throw new SessionConfigError("secrets", "must be a secret string or a non-empty list of them, newest first.");
	}
	secrets.forEach((secret: unknown, i) => {
		if (typeof secret !== "string" || secret.length < MIN_SECRET_LENGTH) {
			const got = typeof secret === "string" ? `${secret.length} characters` : typeof secret;
			throw new SessionConfigError(`secrets[${i}]`, `must be a string of at least ${MIN_SECRET_LENGTH} random characters, got ${got}. Generate one with: openssl rand -base64 32`);
		}
	});
	const maxCookieBytes = options.maxCookieBytes ?? MAX_COOKIE_BYTES;
	if (!Number.isInteger(maxCookieBytes) || maxCookieBytes < 256 || maxCookieBytes > MAX_COOKIE_BYTES) {
		throw new SessionConfigError("maxCookieBytes", `must be a whole number of bytes from 256 to ${MAX_COOKIE_BYTES} (browsers drop larger cookies), got ${String(maxCookieBytes)}.`);
	}

	const secretList: readonly string[] = [...secrets];
	const sealer = nodeCrypto && typeof Buffer === "function" ? nodeSealer(nodeCrypto, secretList) : webSealer(secretList);

	function finishSeal(sealed: string): string {
		const value = VERSION + sealed;
		const size = COOKIE_NAME_RESERVE + value.length;
		if (size > maxCookieBytes) throw new SessionTooLargeError(size, maxCookieBytes, "maxCookieBytes");
		return value;
	}

	function finishUnseal(json: string | null): StoredRecord | null {
		if (json === null) return null;
		// An expired record is returned: the manager checks the deadlines on every load, with the
		// app's clock, and reports it as an expired session rather than as a forged cookie.
		return fromPayload(json);
	}

	return {
		name: "cookie",
		kind: "sealed-cookie",
		maxCookieBytes,
		synchronous: sealer.synchronous,

		seal(record: StoredRecord) {
			const sealed = sealer.seal(JSON.stringify(toPayload(record)));
			return typeof sealed === "string" ? finishSeal(sealed) : sealed.then(finishSeal);
		},

		unseal(value: string) {
			if (typeof value !== "string" || value.length > maxCookieBytes || !value.startsWith(VERSION)) return null;
			const opened = sealer.open(value.slice(VERSION.length));
			return opened instanceof Promise ? opened.then(finishUnseal) : finishUnseal(opened);
		},
	};
}

/**
 * AES-256-GCM under the first key; opening tries every key. A sealed value is the base64url
 * (unpadded) of IV ‖ ciphertext ‖ 16-byte tag, the order Web Crypto writes them in.
 */
interface Sealer {
	readonly synchronous: boolean;
	/** Seals the UTF-8 of `text`. */
	seal(text: string): string | Promise<string>;
	/** The text sealed in `sealed`, or `null` when it is malformed or no key authenticates it. */
	open(sealed: string): string | null | Promise<string | null>;
}

const MIN_SEALED_BYTES = IV_BYTES + TAG_BYTES + 1;

function nodeSealer(crypto: typeof NodeCrypto, secrets: readonly string[]): Sealer {
	const keys = secrets.map((secret) => crypto.createSecretKey(new Uint8Array(crypto.hkdfSync("sha256", secret, new Uint8Array(0), KEY_INFO, 32))));
	// Opening decodes into this buffer rather than a new one each time: it only ever holds
	// ciphertext, and nothing reads it after `open` returns.
	const scratch = Buffer.allocUnsafeSlow(MAX_COOKIE_BYTES);
	return {
		synchronous: true,
		seal(text) {
			// Base64url strings of whole 3-byte groups join into the encoding of the joined bytes:
			// the 12-byte IV always is one, and a plaintext padded with JSON whitespace to a multiple
			// of 3 gives a ciphertext that is one too. So the pieces never need copying together.
			const plaintext = text.length % 3 === 0 ? text : text + "  ".slice(0, 3 - (text.length % 3));
			return withRandomBytes(IV_BYTES, (iv) => {
				const cipher = crypto.createCipheriv("aes-256-gcm", keys[0]!, iv);
				cipher.setAAD(ADDITIONAL_DATA);
				const head = cipher.update(plaintext, "utf8");
				const tail = cipher.final();
				const tag = cipher.getAuthTag();
				// Characters above U+007F take 2 to 4 bytes: then the byte length may not be a multiple of 3.
				const rest = head.length % 3 === 0 && tail.length === 0 ? head.toString("base64url") + tag.toString("base64url") : Buffer.concat([head, tail, tag]).toString("base64url");
				return toBase64Url(iv) + rest;
			});
		},
		open(sealed) {
			if (sealed.length > MAX_COOKIE_BYTES) return null;
			const length = scratch.write(sealed, "base64url");
			// Re-encoding rejects, in one comparison, characters outside the alphabet (which
			// Buffer skips), padding, and unused low bits that are not zero (two values would
			// otherwise open alike).
			if (length < MIN_SEALED_BYTES || scratch.toString("base64url", 0, length) !== sealed) return null;
			const iv = scratch.subarray(0, IV_BYTES);
			const body = scratch.subarray(IV_BYTES, length - TAG_BYTES);
			const tag = scratch.subarray(length - TAG_BYTES, length);
			for (const key of keys) {
				const decipher = crypto.createDecipheriv("aes-256-gcm", key, iv);
				decipher.setAAD(ADDITIONAL_DATA);
				decipher.setAuthTag(tag);
				const head = decipher.update(body);
				let plaintext: Buffer;
				try {
					const tail = decipher.final();
					plaintext = tail.length === 0 ? head : Buffer.concat([head, tail]);
				} catch {
					// The tag did not verify under this key: try the next one.
					continue;
				}
				const text = plaintext.toString("utf8");
				// Buffer turns bytes that are not UTF-8 into U+FFFD where Web Crypto's path refuses them:
				// only a text holding that character needs the strict look (a one-byte string is skipped at once).
				return text.includes("\uFFFD") && !isUtf8(plaintext) ? null : text;
			}
			return null;
		},
	};
}

function webSealer(secrets: readonly string[]): Sealer {
	let keys: Promise<CryptoKey[]> | undefined;
	const getKeys = (): Promise<CryptoKey[]> => (keys ??= Promise.all(secrets.map(deriveKey)));
	return {
		synchronous: false,
		async seal(text) {
			const [key] = await getKeys();
			const iv = randomBytes(IV_BYTES);
			const ciphertext = await globalThis.crypto.subtle.encrypt({ name: "AES-GCM", iv: iv as Uint8Array<ArrayBuffer>, additionalData: ADDITIONAL_DATA }, key!, encoder.encode(text));
			const sealed = new Uint8Array(IV_BYTES + ciphertext.byteLength);
			sealed.set(iv);
			sealed.set(new Uint8Array(ciphertext), IV_BYTES);
			return toBase64Url(sealed);
		},
		async open(sealed) {
			const bytes = fromBase64Url(sealed);
			// Unused low bits of the last character must be zero, or two values would open alike.
			if (bytes === null || bytes.length < MIN_SEALED_BYTES || toBase64Url(bytes) !== sealed) return null;
			const iv = bytes.slice(0, IV_BYTES);
			const ciphertext = bytes.slice(IV_BYTES);
			for (const key of await getKeys()) {
				const plaintext = await decrypt(key, iv, ciphertext);
				if (plaintext === null) continue;
				try {
					return decoder.decode(plaintext);
				} catch {
					return null;
				}
			}
			return null;
		},
	};
}

function isUtf8(bytes: Uint8Array): boolean {
	try {
		decoder.decode(bytes);
		return true;
	} catch {
		return false;
	}
}

async function deriveKey(secret: string): Promise<CryptoKey> {
	const subtle = globalThis.crypto.subtle;
	const material = await subtle.importKey("raw", encoder.encode(secret), "HKDF", false, ["deriveKey"]);
	return subtle.deriveKey(
		{ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: KEY_INFO },
		material,
		{ name: "AES-GCM", length: 256 },
		false,
		["encrypt", "decrypt"],
	);
}

/** The plaintext, or `null` when the tag does not verify under `key` (wrong key or altered bytes). */
async function decrypt(key: CryptoKey, iv: Uint8Array<ArrayBuffer>, ciphertext: Uint8Array<ArrayBuffer>): Promise<Uint8Array | null> {
	try {
		return new Uint8Array(await globalThis.crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: ADDITIONAL_DATA }, key, ciphertext));
	} catch (error) {
		// Web Crypto reports a failed authentication only as a rejected OperationError.
		if ((error as { name?: unknown } | null)?.name === "OperationError") return null;
		throw error;
	}
}

// A positional array rather than an object: field names would cost ~70 of the 4 KB.
type Payload = [createdAt: number, idleExpiresAt: number, absoluteExpiresAt: number, subject: string | null, data: Record<string, string>, flash: Record<string, string>];

function toPayload(record: StoredRecord): Payload {
	return [record.createdAt, record.idleExpiresAt, record.absoluteExpiresAt, record.subject, record.data, record.flash];
}

/** The record, or `null` unless the JSON has exactly the shape `toPayload` writes. */
function fromPayload(json: string): StoredRecord | null {
	let parsed: unknown;
	try {
		parsed = JSON.parse(json);
	} catch {
		return null;
	}
	if (!Array.isArray(parsed) || parsed.length !== 6) return null;
	const [createdAt, idleExpiresAt, absoluteExpiresAt, subject, data, flash] = parsed as unknown[];
	if (!isFiniteNumber(createdAt) || !isFiniteNumber(idleExpiresAt) || !isFiniteNumber(absoluteExpiresAt)) return null;
	if (subject !== null && typeof subject !== "string") return null;
	if (!isStringMap(data) || !isStringMap(flash)) return null;
	return { data, flash, createdAt, idleExpiresAt, absoluteExpiresAt, subject };
}

function isFiniteNumber(value: unknown): value is number {
	return typeof value === "number" && Number.isFinite(value);
}

function isStringMap(value: unknown): value is Record<string, string> {
	if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
	return Object.values(value).every((item) => typeof item === "string");
}
