/**
 * An integrator's flow through the client that @hey-api/openapi-ts generates
 * (build/clients/hey-api, from `bash scripts/generate-clients.sh hey-api`): log in, create a
 * category, a product and a location, receive (idempotently) and ship stock, handle 409 and
 * 412 problems, page through a list, and upload a CSV file. `make sdk-check` type-checks it
 * (strict); tests/e2e/test_sdk_typescript.py compiles it and runs it against the real server:
 *
 *   STOREKEEPER_URL=http://127.0.0.1:8080 STOREKEEPER_EMAIL=... STOREKEEPER_PASSWORD=... \
 *     node build/sdk-e2e/sdk/hey-api/e2e.js
 *
 * It checks every answer itself and prints one JSON line with what the server said.
 */
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';

import { type Client, createClient, createConfig } from '../../build/clients/hey-api/client';
import {
  createCategory,
  createLocation,
  createProduct,
  createReceipt,
  createShipment,
  getProduct,
  importProductsCsv,
  listProducts,
  login,
  type Problem,
  type StockShortage,
  updateProduct,
} from '../../build/clients/hey-api';
import { type FlowSummary, importCsv, main, PROBLEM_BASE, type Settings } from '../e2e-support';

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

async function flow({ baseUrl, email, password, tag }: Settings): Promise<FlowSummary> {
  const anonymous: Client = createClient(createConfig({ baseUrl }));
  const token = ok(await login({ client: anonymous, body: { email, password } }));
  assert.equal(token.token_type, 'bearer');
  const client: Client = createClient(createConfig({ baseUrl, auth: token.access_token }));

  const category = ok(await createCategory({ client, body: { name: `Tools ${tag}` } }));
  assert.equal(category.parent_id, null);
  const sku = `${tag}-HAM`;
  const product = ok(
    await createProduct({
      client,
      body: { sku, name: 'Claw hammer 16 oz', category_id: category.id, reorder_point: 10 },
    }),
  );
  assert.equal(product.sku, sku);
  assert.equal(product.is_active, true);
  const location = ok(await createLocation({ client, body: { code: tag, name: 'Main warehouse' } }));

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
  assert.equal(received.unit_cost, '7.2500');
  const retry = await createReceipt({ client, body: receiptBody, headers });
  const replay = ok(retry);

  const shipment = ok(
    await createShipment({
      client,
      body: { location_id: location.id, reference: `SO-${tag}`, lines: [{ product_id: product.id, quantity: 3 }] },
    }),
  );
  const [shipped] = shipment.movements;
  assert.ok(shipped);
  assert.equal(shipped.quantity, -3);

  // More than is on hand: a 409 problem whose shortages are typed (Problem.shortages).
  const short = problem(
    await createShipment({
      client,
      body: { location_id: location.id, lines: [{ product_id: product.id, quantity: 50 }] },
    }),
  );
  assert.equal(short.type, `${PROBLEM_BASE}insufficient-stock`);
  const shortages: StockShortage[] = short.shortages ?? [];

  const duplicate = problem(await createProduct({ client, body: { sku: sku.toLowerCase(), name: 'Another' } }));

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
  const secondTag = updated.response.headers.get('ETag');
  assert.ok(secondTag);
  const stale = problem(
    await updateProduct({
      client,
      path: { product_id: product.id },
      headers: { 'If-Match': firstTag },
      body: { reorder_point: 30 },
    }),
  );

  // Five more products, then every product of this run, two per page, by the cursor.
  for (let i = 1; i <= 5; i++) {
    ok(await createProduct({ client, body: { sku: `${tag}-P${i}`, name: `Part ${i}` } }));
  }
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const page = ok(await listProducts({ client, query: { q: tag, sort: 'sku', limit: 2, cursor } }));
    pages.push(page.items.map((item) => item.sku));
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined && pages.length < 20);

  // A file upload (multipart/form-data), checked and counted only.
  const file = new Blob([importCsv(tag)], { type: 'text/csv' });
  const imported = ok(await importProductsCsv({ client, body: { file }, query: { dry_run: true } }));

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
    receipt: {
      document_id: receipt.id,
      replay_document_id: replay.id,
      replayed: retry.response.headers.get('Idempotent-Replayed') === 'true',
      balance_after: received.balance_after,
    },
    shipment: { document_id: shipment.id, balance_after: shipped.balance_after },
    insufficient: {
      status: short.status,
      type: short.type,
      shortages,
      pointers: (short.errors ?? []).map((error) => error.pointer ?? ''),
    },
    duplicate_sku: { status: duplicate.status, type: duplicate.type, detail: duplicate.detail ?? '' },
    etag: { first: firstTag, second: secondTag, stale_status: stale.status, stale_type: stale.type },
    pages,
    csv_import: imported,
  };
}

if (require.main === module) {
  main(flow);
}
