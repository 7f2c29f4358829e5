// The contract: openapi.yaml is a valid OpenAPI 3.1 document, the routes served are exactly its
// operations, and its problem catalogue is the one the code answers with. (Every response of the
// API tests is validated against the spec by harness.ts as it arrives.)
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validate, compileErrors } from '@readme/openapi-parser';
import { openapiPath } from '../../src/api/app.js';
import { PROBLEMS, problemType } from '../../src/api/errors.js';
import { spec, startApi } from './harness.js';

describe('openapi.yaml', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const r = await validate(openapiPath());
    assert.ok(r.valid, r.valid ? '' : compileErrors(r));
    assert.equal((spec as { openapi?: string }).openapi, '3.1.0');
  });

  it('lists exactly the routes the API serves', async () => {
    const api = await startApi();
    try {
      const served = api.routes.map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`).sort();
      const documented = Object.entries(spec.paths)
        .flatMap(([path, ops]) => Object.keys(ops).filter((k) => ['get', 'put', 'post', 'delete', 'patch'].includes(k)).map((m) => `${m.toUpperCase()} ${path}`))
        .sort();
      assert.deepEqual(served, documented);
    } finally {
      await api.close();
    }
  });

  it('documents every problem type the code can answer, and no other', () => {
    const schema = (spec as unknown as { components: { schemas: { Problem: { properties: { type: { enum: string[] } } } } } }).components.schemas.Problem;
    assert.deepEqual([...schema.properties.type.enum].sort(), Object.keys(PROBLEMS).map((k) => problemType(k as keyof typeof PROBLEMS)).sort());
  });

  it('CONTRACT.md shapes: PUT /v1/rules/{name} answers the rule and its version; 422 carries errors with line and column', () => {
    const put = spec.paths['/v1/rules/{name}']!.put!.responses as Record<string, unknown>;
    assert.ok(put['200'] && put['201'] && put['422']);
    const test = spec.paths['/v1/test']!.post!.responses as Record<string, unknown>;
    assert.ok(test['200']);
    assert.ok(spec.paths['/v1/policies/relay/networks']!.post!.responses['201']);
    assert.ok(spec.paths['/v1/policies/relay/networks/{id}']!.delete);
  });
});
