# ruff: noqa: E501  (markdown table rows are one line each)
"""The "whose error is it" table of ``docs/providers.md`` (rendered by ``tools/provider_table.py``).

Kept as text beside the table generator; it documents ``_shared.common.upstream_error`` and the
per-adapter refinements; each row names the provider page it was read from.
"""

from __future__ import annotations

ERRORS_SECTION = """\
## Upstream errors: ours or the caller's

An upstream error about the gateway's own account or configuration (billing, quota,
credentials, a model id from the catalog, a deployment) is **ours**: the router fails over
to the next endpoint, and if none is left the caller gets 502 `upstream_failed` (never a
400 blaming its request). Quota and billing errors are not waited out even when they come
as a 429 with `Retry-After`. A "model not found" for a model the catalog believed live (code
`model_not_found`, `DeploymentNotFound` or Google's `NOT_FOUND`, or a 410) is logged at
ERROR ("upstream says the model is gone") and that endpoint is skipped for an hour without
counting as a breaker failure; a bare 404 fails over as ours but is not taken as "gone"
(it may be an expired poll URL). The **caller's** errors (a 400/413/422 about
the request, a content-policy refusal) are returned as a 400 with the upstream's message
and are never retried elsewhere. Any other 4xx is treated as ours (`common.upstream_error`).

| provider | ours (fail over) | the caller's (400) | source |
|---|---|---|---|
| `openai` | 401 `invalid_api_key`; 403 `unsupported_country_region_territory`; 400 `billing_hard_limit_reached`; 429 type `insufficient_quota` (codes `credit_balance_exhausted`, `*_spend_limit_exceeded`, `organization_usage_limit_exceeded`); 404 `model_not_found` (model gone) | 400 `invalid_request_error` with a `param`; 400 `moderation_blocked` / `content_policy_violation` (content policy) | developers.openai.com/api/docs/guides/error-codes; quota codes as quoted by learn.microsoft.com Dev Proxy "openai-insufficient-quota" (secondary); `model_not_found` for shut-down models: developers.openai.com/api/docs/deprecations |
| `azure` | 401 access denied; 404 `DeploymentNotFound` (model gone); wrong/missing `api-version` | 400 `contentFilter` / `ResponsibleAIPolicyViolation` (content policy); other 400s | Azure OpenAI inference reference (learn.microsoft.com, `dalleErrorResponse`) |
| `google` | 400 `INVALID_ARGUMENT` with reason `API_KEY_INVALID`; 400 `FAILED_PRECONDITION` (billing / region); 403 `PERMISSION_DENIED`; 404 `NOT_FOUND`; 402 `RESOURCE_EXHAUSTED` (prepay credits depleted; not waited out); 429 `RESOURCE_EXHAUSTED` | 400 `INVALID_ARGUMENT`; blocked prompt / `IMAGE_SAFETY` (content policy) | ai.google.dev/gemini-api/docs/troubleshooting (API errors table); 402: discuss.ai.google.dev/t/api-update-depleted-prepay-credits-now-return-http-402-instead-of-429/183654 |
| `bfl` | 401/403 (`x-key`); 402 out of credits; 404; 429 | 400/422 validation (`detail`); `Request Moderated` / `Content Moderated` (content policy) | docs.bfl.ai "Errors" |
| `stability` | 401; 402 `payment_required` (out of credits); 404; 429; 400 naming `model` (an sd3 id it no longer has: model gone) | other 400/413/422; `content_moderation` (content policy) | platform.stability.ai/docs/api-reference; 402 body as captured in github.com/Asadrammy/body-swap (secondary) |
| `replicate` | 401; 402 (billing); 404; 429 | 422 validation; NSFW failures (content policy) | replicate.com/docs/reference/http |
| `fal` | 401; 403 (locked / exhausted balance); 404; any error with `X-Fal-Retryable: true` (per issue 13, not independently verified) | 422 validation; `content_policy_violation` (body `type` or the documented `X-Fal-Error-Type` header) | fal.ai/docs model errors; fal.ai/docs/documentation/serverless/reliability/retries |
| `together` | 401; 402 (spending limit); 403; 404; 429 | 400/422; NSFW messages (content policy) | docs.together.ai/docs/error-codes |
| `xai` | 400 "Incorrect API key" (read as 401); 401; 403 (no permission, team blocked); 404 (model not found: model gone); 429 / 403 "used all available credits or reached its monthly spending limit" (not waited out) | other 400/422; moderation refusals (content policy) | docs.x.ai/developers/debugging; credits message as reported in github.com/continuedev/continue/issues/10373 (429) and github.com/warpdotdev/warp/issues/14867 (403) (secondary) |
| `openai_compatible` | as `openai` (same codes); 404/410 | as `openai` | OpenAI error codes (above) |
"""
