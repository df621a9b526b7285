/**
 * The encrypted-cookie store: the whole session record lives in the cookie, sealed with
 * AES-256-GCM. Where node:crypto is reachable without an import (`process.getBuiltinModule`:
 * Node, Bun, Deno) it seals synchronously; elsewhere (Workers) it uses Web Crypto. Both derive
 * the same keys and write the same format, so either opens the other's cookies.
 */
import type * as NodeCrypto from "node:crypto";
import { fromBase64Url, nodeCrypto, randomBytes, toBase64Url } from "../core/crypto.js";
import { SessionConfigError, SessionTooLargeError } from "../core/errors.js";
import type { SealedCookieStore, StoredRecord } from "../core/store.js";

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
	/** The time source, epoch ms; pass the same clock as `createSessions`. @default Date.now */
	clock?: () => number;
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

/**
 * A store that keeps the session in the cookie itself, encrypted and authenticated with
 * AES-256-GCM (a key per secret, derived with HKDF-SHA-256). Nothing is stored on a server.
 *
 * `unseal` resolves `null`, never rejects, for a value that was tampered with, truncated,
 * sealed with a secret no longer in the list, in another format version, malformed, or whose
 * record has expired. `seal` rejects with `SessionTooLargeError` when the cookie would pass
 * `maxCookieBytes`.
 *
 * Limits, because there is no server state: one session cannot be revoked before it expires,
 * "log out everywhere" is impossible, and `renew()` only re-seals (an old cookie stays valid
 * until its own expiry). Keep the idle timeout short.
 *
 * Throws `SessionConfigError` for a missing or short secret, or a bad `maxCookieBytes`.
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
	const clock = options.clock ?? Date.now;
	if (typeof clock !== "function") throw new SessionConfigError("clock", "must be a function returning epoch milliseconds.");

	const secretList: readonly string[] = [...secrets];
	const sealer = nodeCrypto ? nodeSealer(nodeCrypto, secretList) : webSealer(secretList);

	function finishSeal(sealed: Uint8Array): string {
		const value = VERSION + toBase64Url(sealed);
		const size = COOKIE_NAME_RESERVE + value.length;
		if (size > maxCookieBytes) throw new SessionTooLargeError(size, maxCookieBytes, "maxCookieBytes");
		return value;
	}

	function finishUnseal(plaintext: Uint8Array | null): StoredRecord | null {
		if (plaintext === null) return null;
		const record = fromPayload(plaintext);
		if (record === null) return null;
		const now = clock();
		return now >= record.idleExpiresAt || now >= record.absoluteExpiresAt ? null : record;
	}

	return {
		name: "cookie",
		kind: "sealed-cookie",
		maxCookieBytes,
		synchronous: sealer.synchronous,

		seal(record: StoredRecord) {
			const iv = randomBytes(IV_BYTES);
			const plaintext = encoder.encode(JSON.stringify(toPayload(record)));
			const sealed = sealer.encrypt(iv, plaintext);
			return sealed instanceof Uint8Array ? finishSeal(sealed) : sealed.then(finishSeal);
		},

		unseal(value: string) {
			if (typeof value !== "string" || value.length > maxCookieBytes || !value.startsWith(VERSION)) return null;
			const text = value.slice(VERSION.length);
			const bytes = fromBase64Url(text);
			// Unused low bits of the last character must be zero, or two values would open alike.
			if (bytes === null || bytes.length < IV_BYTES + TAG_BYTES + 1 || toBase64Url(bytes) !== text) return null;
			const opened = sealer.decrypt(bytes.subarray(0, IV_BYTES), bytes.subarray(IV_BYTES));
			return opened instanceof Promise ? opened.then(finishUnseal) : finishUnseal(opened);
		},
	};
}

/** AES-256-GCM under the first key; opening tries every key. Ciphertext is followed by its 16-byte tag, as Web Crypto writes it. */
interface Sealer {
	readonly synchronous: boolean;
	encrypt(iv: Uint8Array, plaintext: Uint8Array): Uint8Array | Promise<Uint8Array>;
	/** The plaintext, or `null` when no key authenticates the bytes. */
	decrypt(iv: Uint8Array, ciphertext: Uint8Array): Uint8Array | null | Promise<Uint8Array | null>;
}

function nodeSealer(crypto: typeof NodeCrypto, secrets: readonly string[]): Sealer {
	const keys = secrets.map((secret) => crypto.createSecretKey(new Uint8Array(crypto.hkdfSync("sha256", secret, new Uint8Array(0), KEY_INFO, 32))));
	return {
		synchronous: true,
		encrypt(iv, plaintext) {
			const cipher = crypto.createCipheriv("aes-256-gcm", keys[0]!, iv);
			cipher.setAAD(ADDITIONAL_DATA);
			const head = cipher.update(plaintext);
			const tail = cipher.final();
			const tag = cipher.getAuthTag();
			const sealed = new Uint8Array(IV_BYTES + head.length + tail.length + TAG_BYTES);
			sealed.set(iv);
			sealed.set(head, IV_BYTES);
			sealed.set(tail, IV_BYTES + head.length);
			sealed.set(tag, IV_BYTES + head.length + tail.length);
			return sealed;
		},
		decrypt(iv, ciphertext) {
			const body = ciphertext.subarray(0, ciphertext.length - TAG_BYTES);
			const tag = ciphertext.subarray(ciphertext.length - TAG_BYTES);
			for (const key of keys) {
				const decipher = crypto.createDecipheriv("aes-256-gcm", key, iv);
				decipher.setAAD(ADDITIONAL_DATA);
				decipher.setAuthTag(tag);
				const head = decipher.update(body);
				try {
					const tail = decipher.final();
					if (tail.length === 0) return head;
					const plaintext = new Uint8Array(head.length + tail.length);
					plaintext.set(head);
					plaintext.set(tail, head.length);
					return plaintext;
				} catch {
					// The tag did not verify under this key: try the next one.
				}
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
		async encrypt(iv, plaintext) {
			const [key] = await getKeys();
			const ciphertext = await globalThis.crypto.subtle.encrypt({ name: "AES-GCM", iv: iv as Uint8Array<ArrayBuffer>, additionalData: ADDITIONAL_DATA }, key!, plaintext as Uint8Array<ArrayBuffer>);
			const sealed = new Uint8Array(IV_BYTES + ciphertext.byteLength);
			sealed.set(iv);
			sealed.set(new Uint8Array(ciphertext), IV_BYTES);
			return sealed;
		},
		async decrypt(iv, ciphertext) {
			for (const key of await getKeys()) {
				const plaintext = await decrypt(key, iv.slice(), ciphertext.slice());
				if (plaintext !== null) return plaintext;
			}
			return null;
		},
	};
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

const decoder = new TextDecoder("utf-8", { fatal: true });

/** The record, or `null` unless the plaintext has exactly the shape `toPayload` writes. */
function fromPayload(plaintext: Uint8Array): StoredRecord | null {
	let parsed: unknown;
	try {
		parsed = JSON.parse(decoder.decode(plaintext));
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
