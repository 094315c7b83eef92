import test from "node:test";
import assert from "node:assert/strict";
import { challengeS256, createPkce, createVerifier } from "../../dist/index.js";

test("the S256 challenge matches RFC 7636 appendix B", async () => {
  assert.equal(
    await challengeS256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
  );
});

test("verifiers are 43 unreserved characters (256 random bits) and never repeat", async () => {
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const v = createVerifier();
    assert.match(v, /^[A-Za-z0-9_-]{43}$/);
    assert.ok(!seen.has(v));
    seen.add(v);
  }
  const p = await createPkce();
  assert.equal(p.method, "S256");
  assert.equal(p.challenge, await challengeS256(p.verifier));
  assert.match(p.challenge, /^[A-Za-z0-9_-]{43}$/);
});
