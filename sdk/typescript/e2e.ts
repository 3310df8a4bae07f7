/**
 * An integrator's flow through the generated TypeScript client (build/clients/typescript,
 * from `bash scripts/generate-clients.sh typescript`): log in, create a category, a product
 * and a location, receive (idempotently) and ship stock, page through a list, handle 409 and
 * 412 problems. `make sdk-check` type-checks it (strict); tests/e2e/test_sdk_python.py compiles
 * it and runs it against the real server:
 *
 *   STOREKEEPER_URL=http://127.0.0.1:8080 STOREKEEPER_EMAIL=... STOREKEEPER_PASSWORD=... \
 *     node build/sdk-e2e/sdk/typescript/e2e.js
 *
 * It checks every answer itself and prints one JSON line with what the server said.
 */
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';

import { type Client, createClient, createConfig } from '../../build/clients/typescript/client/index.js';
import {
  createCategory,
  createLocation,
  createProduct,
  createReceipt,
  createShipment,
  getProduct,
  listProducts,
  login,
  type Problem,
  type Product,
  updateProduct,
} from '../../build/clients/typescript/index.js';

const PROBLEM_BASE = 'https://storekeeper.dev/problems/';

/** A shortfall named by a 409 `insufficient-stock` problem (an extension member). */
export interface Shortage {
  line: number;
  product_id: number;
  location_id: number;
  requested: number;
  available: number;
}

export type InsufficientStock = Problem & { shortages: Shortage[] };

export function isProblemOfType(problem: Problem, kind: string): boolean {
  return problem.type === PROBLEM_BASE + kind;
}

export function isInsufficientStock(problem: Problem): problem is InsufficientStock {
  return isProblemOfType(problem, 'insufficient-stock') && Array.isArray(problem.shortages);
}

/** The data of a successful call; anything else fails with the problem document. */
function ok<T>(result: { data: T; error: undefined } | { data: undefined; error: Problem }): T {
  if (result.error !== undefined) {
    throw new Error(`unexpected problem: ${JSON.stringify(result.error)}`);
  }
  return result.data;
}

/** The problem of a failed call; a success fails. */
function problem<T>(result: { data: T; error: undefined } | { data: undefined; error: Problem }): Problem {
  if (result.error === undefined) {
    throw new Error(`expected a problem, got ${JSON.stringify(result.data)}`);
  }
  return result.error;
}

export interface FlowSummary {
  token_type: string;
  category_id: number;
  product: Pick<Product, 'id' | 'sku' | 'category_id' | 'reorder_point'>;
  location_id: number;
  receipt: { document_id: number; replayed: boolean; balance_after: number };
  shipment: { document_id: number; balance_after: number };
  insufficient: { status: number; title: string; shortages: Shortage[]; pointers: string[] };
  duplicate_sku: { status: number; detail: string };
  etag: { first: string; second: string; stale_status: number; stale_type: string };
  pages: string[][];
}

export async function runFlow(baseUrl: string, email: string, password: string, tag: string): Promise<FlowSummary> {
  const anonymous: Client = createClient(createConfig({ baseUrl }));
  const token = ok(await login({ client: anonymous, body: { email, password } }));
  assert.equal(token.token_type, 'bearer');
  const client: Client = createClient(createConfig({ baseUrl, auth: token.access_token }));

  const category = ok(await createCategory({ client, body: { name: `TS tools ${tag}` } }));
  assert.equal(category.name, `TS tools ${tag}`);
  assert.equal(category.parent_id, null);

  const sku = `TS-${tag}-HAM`;
  const product = ok(
    await createProduct({
      client,
      body: { sku, name: 'Claw hammer 16 oz', category_id: category.id, reorder_point: 10 },
    }),
  );
  assert.equal(product.sku, sku);
  assert.equal(product.category_id, category.id);
  assert.equal(product.is_active, true);

  const location = ok(await createLocation({ client, body: { code: `TS-${tag}`, name: 'Main warehouse' } }));
  assert.equal(location.code, `TS-${tag}`);

  // Receive 40 at 7.25; the retry with the same Idempotency-Key replays the first answer.
  const receiptBody = {
    location_id: location.id,
    reference: `PO-${tag}`,
    lines: [{ product_id: product.id, quantity: 40, unit_cost: '7.25' }],
  };
  const headers = { 'Idempotency-Key': randomUUID() };
  const receipt = ok(await createReceipt({ client, body: receiptBody, headers }));
  assert.equal(receipt.kind, 'receipt');
  const [received] = receipt.movements;
  assert.ok(received);
  assert.equal(received.quantity, 40);
  assert.equal(received.balance_after, 40);
  assert.equal(received.unit_cost, '7.2500');
  const retry = await createReceipt({ client, body: receiptBody, headers });
  assert.equal(ok(retry).id, receipt.id);
  const replayed = retry.response.headers.get('Idempotent-Replayed') === 'true';

  const shipment = ok(
    await createShipment({
      client,
      body: { location_id: location.id, reference: `SO-${tag}`, lines: [{ product_id: product.id, quantity: 3 }] },
    }),
  );
  const [shipped] = shipment.movements;
  assert.ok(shipped);
  assert.equal(shipped.quantity, -3);
  assert.equal(shipped.balance_after, 37);

  // More than is on hand: 409 insufficient-stock, narrowed to its typed shortages.
  const short = problem(
    await createShipment({
      client,
      body: { location_id: location.id, lines: [{ product_id: product.id, quantity: 50 }] },
    }),
  );
  assert.equal(short.status, 409);
  if (!isInsufficientStock(short)) {
    throw new Error(`expected insufficient-stock, got ${short.type}`);
  }
  const [shortage] = short.shortages;
  assert.ok(shortage);
  assert.equal(shortage.requested, 50);
  assert.equal(shortage.available, 37);

  const duplicate = problem(await createProduct({ client, body: { sku: sku.toLowerCase(), name: 'Another' } }));
  assert.equal(duplicate.status, 409);
  assert.ok(isProblemOfType(duplicate, 'duplicate-sku'), duplicate.type);
  assert.ok(duplicate.detail);

  // Conditional update: the current ETag wins once; the stale one is refused with 412.
  const read = await getProduct({ client, path: { product_id: product.id } });
  ok(read);
  const firstTag = read.response.headers.get('ETag');
  assert.ok(firstTag);
  const updated = await updateProduct({
    client,
    path: { product_id: product.id },
    headers: { 'If-Match': firstTag },
    body: { reorder_point: 20 },
  });
  const updatedProduct = ok(updated);
  assert.equal(updatedProduct.reorder_point, 20);
  const secondTag = updated.response.headers.get('ETag');
  assert.ok(secondTag && secondTag !== firstTag);
  const stale = problem(
    await updateProduct({
      client,
      path: { product_id: product.id },
      headers: { 'If-Match': firstTag },
      body: { reorder_point: 30 },
    }),
  );
  assert.equal(stale.status, 412);

  // Five more products, then every product of this run, two per page, by the cursor.
  for (let i = 1; i <= 5; i++) {
    ok(await createProduct({ client, body: { sku: `TS-${tag}-P${i}`, name: `Part ${i}` } }));
  }
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const page = ok(await listProducts({ client, query: { q: `TS-${tag}`, sort: 'sku', limit: 2, cursor } }));
    pages.push(page.items.map((item) => item.sku));
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined && pages.length < 20);

  return {
    token_type: token.token_type,
    category_id: category.id,
    product: {
      id: updatedProduct.id,
      sku: updatedProduct.sku,
      category_id: updatedProduct.category_id,
      reorder_point: updatedProduct.reorder_point,
    },
    location_id: location.id,
    receipt: { document_id: receipt.id, replayed, balance_after: received.balance_after },
    shipment: { document_id: shipment.id, balance_after: shipped.balance_after },
    insufficient: {
      status: short.status,
      title: short.title,
      shortages: short.shortages,
      pointers: (short.errors ?? []).map((error) => error.pointer ?? ''),
    },
    duplicate_sku: { status: duplicate.status, detail: duplicate.detail ?? '' },
    etag: { first: firstTag, second: secondTag, stale_status: stale.status, stale_type: stale.type },
    pages,
  };
}

function setting(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`set ${name}`);
  }
  return value;
}

if (require.main === module) {
  runFlow(
    setting('STOREKEEPER_URL'),
    setting('STOREKEEPER_EMAIL'),
    setting('STOREKEEPER_PASSWORD'),
    process.env.STOREKEEPER_TAG ?? randomUUID().slice(0, 8),
  ).then(
    (summary) => console.log(JSON.stringify(summary)),
    (error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
