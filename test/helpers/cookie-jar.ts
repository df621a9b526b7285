/**
 * A tiny cookie jar for `fetch` in tests: one origin, cookies by name, deletion by `Max-Age=0`
 * or a past `Expires`. It does not enforce `Secure`, `Path` or `Domain`: tests assert those
 * attributes themselves, on the parsed `Set-Cookie` lines.
 */

/** One `Set-Cookie` line, parsed. Attribute names are lowercased; flags map to `true`. */
export interface SetCookie {
	name: string;
	value: string;
	attributes: Map<string, string | true>;
}

/** Parses one `Set-Cookie` header value. */
export function parseSetCookie(line: string): SetCookie {
	const [pair = "", ...parts] = line.split(";");
	const eq = pair.indexOf("=");
	const attributes = new Map<string, string | true>();
	for (const part of parts) {
		const at = part.indexOf("=");
		if (at < 0) attributes.set(part.trim().toLowerCase(), true);
		else attributes.set(part.slice(0, at).trim().toLowerCase(), part.slice(at + 1).trim());
	}
	return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attributes };
}

/** Every `Set-Cookie` of a response, parsed, in order. */
export function setCookiesOf(response: Response): SetCookie[] {
	return response.headers.getSetCookie().map(parseSetCookie);
}

/** One response, read to the end. */
export interface Reply {
	status: number;
	body: string;
	headers: Headers;
	/** Every Set-Cookie line. */
	cookies: SetCookie[];
	/** The session cookie's Set-Cookie line (the first, if several), or undefined. */
	session: SetCookie | undefined;
}

/** Reads `response` to the end; `cookieName` names the session cookie. */
export async function readReply(response: Response, cookieName: string): Promise<Reply> {
	const body = await response.text();
	const cookies = setCookiesOf(response);
	return { status: response.status, body, headers: response.headers, cookies, session: cookies.find((c) => c.name === cookieName) };
}

function isRemoval(cookie: SetCookie): boolean {
	const maxAge = cookie.attributes.get("max-age");
	if (typeof maxAge === "string" && Number(maxAge) <= 0) return true;
	const expires = cookie.attributes.get("expires");
	return typeof expires === "string" && Date.parse(expires) <= Date.now();
}

/** Cookies by name, fed by responses, sent as one `Cookie` header. */
export class CookieJar {
	readonly #cookies = new Map<string, string>();

	/** The value of cookie `name`, or `undefined`. */
	get(name: string): string | undefined {
		return this.#cookies.get(name);
	}

	/** Puts a cookie in the jar by hand (e.g. a tampered one). */
	set(name: string, value: string): void {
		this.#cookies.set(name, value);
	}

	/** Stores what the response's `Set-Cookie` headers say: new values, and removals. */
	update(response: Response): void {
		for (const cookie of setCookiesOf(response)) {
			if (isRemoval(cookie)) this.#cookies.delete(cookie.name);
			else this.#cookies.set(cookie.name, cookie.value);
		}
	}

	/** The `Cookie` request header for the jar's content, or `undefined` when it is empty. */
	header(): string | undefined {
		if (this.#cookies.size === 0) return undefined;
		return [...this.#cookies].map(([name, value]) => `${name}=${value}`).join("; ");
	}

	/** A copy: two clients starting from the same cookies. */
	clone(): CookieJar {
		const copy = new CookieJar();
		for (const [name, value] of this.#cookies) copy.set(name, value);
		return copy;
	}
}
