import type { Session, SessionManager } from "sessionkit";

/** The `name=value` part of a Set-Cookie header, as a browser would send it back. */
export function cookieOf(setCookie: string | null): string {
	if (!setCookie) throw new Error("expected a Set-Cookie header");
	return setCookie.split(";")[0]!;
}

/**
 * One request: load the session from `cookie`, run `handler`, commit. The default handler
 * looks at the session (a request that never uses it is not activity: see manager tests).
 */
export async function request<Data extends object>(
	sessions: SessionManager<Data>,
	cookie: string | undefined,
	handler: (session: Session<Data>) => unknown = (session) => session.isNew,
): Promise<{ session: Session<Data>; setCookie: string | null; result: unknown }> {
	const session = await sessions.load(cookie);
	const result = await handler(session);
	const { setCookie } = await sessions.commit(session, { secure: false });
	return { session, setCookie, result };
}
