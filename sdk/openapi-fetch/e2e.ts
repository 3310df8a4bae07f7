/**
 * An integrator's flow through openapi-fetch, typed by the `paths` that openapi-typescript
 * generates (build/clients/openapi-fetch/schema.ts, from
 * `bash scripts/generate-clients.sh openapi-fetch`): log in, create a category, a product and a
 * location, receive (idempotently) and ship stock, handle 409 and 412 problems, page through a
 * list, and upload a CSV file. `make sdk-check` type-checks it (strict);
 * tests/e2e/test_sdk_typescript.py compiles it and runs it against the real server:
 *
 *   STOREKEEPER_URL=http://127.0.0.1:8080 STOREKEEPER_EMAIL=... STOREKEEPER_PASSWORD=... \
 *     node build/sdk-e2e/sdk/openapi-fetch/e2e.js
 *
 * It checks every answer itself and prints one JSON line with what the server said.
 */
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';

import createClient from 'openapi-fetch';

import type { components, paths } from '../../build/clients/openapi-fetch/schema';
import { type FlowSummary, importCsv, main, PROBLEM_BASE, type Settings } from '../e2e-support';

type Problem = components['schemas']['Problem'];
type StockShortage = components['schemas']['StockShortage'];

/** The data of a successful call; anything else fails with the error it carries. */
function ok<D, E>(result: { data?: D; error?: E }): NonNullable<D> {
  if (result.data === undefined || result.data === null) {
    throw new Error(`unexpected error: ${JSON.stringify(result.error)}`);
  }
  return result.data;
}

/** The error of a failed call; a success fails. */
function problem<D, E>(result: { data?: D; error?: E }): NonNullable<E> {
  if (result.error === undefined || result.error === null) {
    throw new Error(`expected an error, got ${JSON.stringify(result.data)}`);
  }
  return result.error;
}

async function flow({ baseUrl, email, password, tag }: Settings): Promise<FlowSummary> {
  const anonymous = createClient<paths>({ baseUrl });
  const token = ok(await anonymous.POST('/api/v1/auth/login', { body: { email, password } }));
  assert.equal(token.token_type, 'bearer');
  const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token.access_token}` } });

  const category = ok(await client.POST('/api/v1/categories', { body: { name: `Tools ${tag}` } }));
  assert.equal(category.parent_id, null);
  const sku = `${tag}-HAM`;
  const product = ok(
    await client.POST('/api/v1/products', {
      body: { sku, name: 'Claw hammer 16 oz', category_id: category.id, reorder_point: 10 },
    }),
  );
  assert.equal(product.sku, sku);
  assert.equal(product.is_active, true);
  const location = ok(await client.POST('/api/v1/locations', { body: { code: tag, name: 'Main warehouse' } }));

  // Receive 40 at 7.25; the retry with the same Idempotency-Key replays the first answer.
  const receiptBody = {
    location_id: location.id,
    reference: `PO-${tag}`,
    lines: [{ product_id: product.id, quantity: 40, unit_cost: '7.25' }],
  };
  const params = { header: { 'Idempotency-Key': randomUUID() } };
  const receipt = ok(await client.POST('/api/v1/stock/receipts', { params, body: receiptBody }));
  assert.equal(receipt.kind, 'receipt');
  const [received] = receipt.movements;
  assert.ok(received);
  assert.equal(received.unit_cost, '7.2500');
  const retry = await client.POST('/api/v1/stock/receipts', { params, body: receiptBody });
  const replay = ok(retry);

  const shipment = ok(
    await client.POST('/api/v1/stock/shipments', {
      body: { location_id: location.id, reference: `SO-${tag}`, lines: [{ product_id: product.id, quantity: 3 }] },
    }),
  );
  const [shipped] = shipment.movements;
  assert.ok(shipped);
  assert.equal(shipped.quantity, -3);

  // More than is on hand: a 409 problem whose shortages are typed (Problem.shortages).
  const short: Problem = problem(
    await client.POST('/api/v1/stock/shipments', {
      body: { location_id: location.id, lines: [{ product_id: product.id, quantity: 50 }] },
    }),
  );
  assert.equal(short.type, `${PROBLEM_BASE}insufficient-stock`);
  const shortages: StockShortage[] = short.shortages ?? [];

  const duplicate: Problem = problem(
    await client.POST('/api/v1/products', { body: { sku: sku.toLowerCase(), name: 'Another' } }),
  );

  // Conditional update: the current ETag wins once; the stale one is refused with 412.
  const path = { product_id: product.id };
  const read = await client.GET('/api/v1/products/{product_id}', { params: { path } });
  ok(read);
  const firstTag = read.response.headers.get('ETag');
  assert.ok(firstTag);
  const updated = await client.PATCH('/api/v1/products/{product_id}', {
    params: { path, header: { 'If-Match': firstTag } },
    body: { reorder_point: 20 },
  });
  const updatedProduct = ok(updated);
  const secondTag = updated.response.headers.get('ETag');
  assert.ok(secondTag);
  const stale: Problem = problem(
    await client.PATCH('/api/v1/products/{product_id}', {
      params: { path, header: { 'If-Match': firstTag } },
      body: { reorder_point: 30 },
    }),
  );

  // Five more products, then every product of this run, two per page, by the cursor.
  for (let i = 1; i <= 5; i++) {
    ok(await client.POST('/api/v1/products', { body: { sku: `${tag}-P${i}`, name: `Part ${i}` } }));
  }
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const page = ok(
      await client.GET('/api/v1/products', { params: { query: { q: tag, sort: 'sku', limit: 2, cursor } } }),
    );
    pages.push(page.items.map((item) => item.sku));
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined && pages.length < 20);

  // A file upload (multipart/form-data), checked and counted only. openapi-typescript types a
  // `format: binary` part as a string (the file's content); openapi-fetch sends JSON unless
  // the body serializer makes a FormData.
  const imported = ok(
    await client.POST('/api/v1/products/import/csv', {
      params: { query: { dry_run: true } },
      body: { file: importCsv(tag) },
      bodySerializer: (body) => {
        const form = new FormData();
        form.append('file', new Blob([body.file], { type: 'text/csv' }), 'products.csv');
        return form;
      },
    }),
  );

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
