/**
 * The demo on Fastify 5. Run it with
 *   node --conditions=sessionkit-source --import tsx examples/fastify/server.ts
 * then open http://127.0.0.1:3000/counter (PORT changes the port).
 */
import { createSessions } from "sessionkit";
import { createApp } from "./app.js";

const port = Number(process.env.PORT ?? 3000);
const sessions = createSessions(); // the memory store: fine for a demo, refused in production

const app = await createApp(sessions, { trustProxy: process.env.TRUST_PROXY === "1" });
app.addHook("onClose", () => sessions.close());
await app.listen({ host: "127.0.0.1", port });
console.log(`Fastify demo on http://127.0.0.1:${port}`);

for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void app.close());
