"""Client commands of the ``imagegate`` CLI: ``generate``, ``edit`` and ``vary``.

They talk to a running gateway through the SDK (``IMAGEGATE_BASE_URL``, default
``http://127.0.0.1:8080/v1``; ``IMAGEGATE_API_KEY``, default the local data dir's
``admin-key``), save the images to files and print provider, cost and paths — or, with
``--json``, one JSON object. A gateway error prints its message and exits 1.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from imagegate.cli.exits import FAILED, USAGE, fail
from imagegate.client import (
    ApiClient,
    ApiError,
    Configuration,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ImagesApi,
    ImagesEditRequest,
    ImageVariationRequest,
)
from imagegate.client.configuration import DEFAULT_HOST, admin_key_path, local_admin_key
from imagegate.client.images_api import HttpInfo

_Request = ImageGenerationRequest | ImagesEditRequest | ImageVariationRequest

err_console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 200)

Model = Annotated[str, typer.Option("--model", "-m", help="Model id or alias.")]
Count = Annotated[int | None, typer.Option("--n", "-n", help="Number of images.")]
Size = Annotated[str | None, typer.Option("--size", "-s", help="WIDTHxHEIGHT or auto.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Directory to save images in.")]
Format = Annotated[
    str | None, typer.Option("--format", "-f", help="Output format: png, jpeg or webp.")
]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed, for engines that take one.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")]
BaseUrl = Annotated[
    str,
    typer.Option("--base-url", envvar="IMAGEGATE_BASE_URL", help="Gateway API base URL."),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="IMAGEGATE_API_KEY",
        help="API key (default: the data dir's admin-key).",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class _Call:
    """The options every client command takes (declared once, in ``_call_options``)."""

    model: str
    n: int | None
    size: str | None
    out: Path
    seed: int | None
    as_json: bool
    base_url: str
    api_key: str | None

    def fields(self) -> dict[str, Any]:
        """The fields every client command sends: images come back inline, with meta and usage."""
        return {
            "model": self.model,
            "n": self.n,
            "size": self.size,
            "seed": self.seed,
            "response_format": "b64_json",
            "meta": True,
            "usage": True,
        }


def _call_options(
    model: Model = "imagegate/sandbox",
    n: Count = None,
    size: Size = None,
    out: OutDir = Path("."),
    seed: Seed = None,
    as_json: AsJson = False,
    base_url: BaseUrl = DEFAULT_HOST,
    api_key: ApiKey = None,
) -> _Call:
    return _Call(model, n, size, out, seed, as_json, base_url, api_key)


def _command(build: Callable[..., _Request]) -> Callable[..., None]:
    """A typer command: ``build``'s own arguments (after the ``_Call``) and then the common
    options; it builds the request, sends it and saves the images."""
    own = list(inspect.signature(build, eval_str=True).parameters.values())[1:]
    common = list(inspect.signature(_call_options, eval_str=True).parameters.values())

    def command(**arguments: Any) -> None:
        call = _call_options(**{option.name: arguments.pop(option.name) for option in common})
        _run(build(call, **arguments), call)

    command.__signature__ = inspect.Signature(own + common)  # type: ignore[attr-defined]
    command.__doc__ = build.__doc__
    return command


def register(app: typer.Typer) -> None:
    """Add the client commands to the main ``imagegate`` app."""
    app.command("generate")(_command(_generate))
    app.command("edit")(_command(_edit))
    app.command("vary")(_command(_vary))


def _generate(
    call: _Call,
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    output_format: Format = None,
    quality: Annotated[str | None, typer.Option(help="Quality, if the model has it.")] = None,
) -> _Request:
    """Generate images from a prompt and save them."""
    return ImageGenerationRequest(
        prompt=prompt, output_format=output_format, quality=quality, **call.fields()
    )


def _edit(
    call: _Call,
    args: Annotated[list[str], typer.Argument(metavar="IMAGE... PROMPT", show_default=False)],
    mask: Annotated[str | None, typer.Option(help="Mask image (transparent = edit).")] = None,
    output_format: Format = None,
) -> _Request:
    """Edit one or more images (paths or URLs); the last argument is the prompt."""
    if len(args) < 2:
        _fail("edit needs at least one IMAGE and a PROMPT", call.as_json, code=USAGE)
    *images, prompt = args
    return ImagesEditRequest(
        image=[_input(i, call.as_json) for i in images],
        prompt=prompt,
        mask=_input(mask, call.as_json) if mask else None,
        output_format=output_format,
        **call.fields(),
    )


def _vary(
    call: _Call, image: Annotated[str, typer.Argument(help="Image path or URL.")]
) -> _Request:
    """Make variations of an image."""
    return ImageVariationRequest(image=_input(image, call.as_json), **call.fields())


def _input(value: str, as_json: bool) -> str:
    """URLs pass through; paths must exist (a clear message beats a server 400)."""
    if value.lower().startswith(("http://", "https://", "data:")):
        return value
    if not Path(value).is_file():
        _fail(f"no such image file: {value}", as_json, code=USAGE)
    return value


_VERBS: dict[type[_Request], str] = {
    ImageGenerationRequest: "Generating",
    ImagesEditRequest: "Editing",
    ImageVariationRequest: "Varying",
}


def _call(api: ImagesApi, request: _Request) -> HttpInfo:
    """The SDK call for ``request``'s endpoint."""
    if isinstance(request, ImageGenerationRequest):
        return api.images_generations_post_with_http_info(request)
    if isinstance(request, ImagesEditRequest):
        return api.images_edits_post_with_http_info(request)
    return api.images_variations_post_with_http_info(request)


def _run(request: _Request, call: _Call) -> None:
    out, as_json = call.out, call.as_json
    token = call.api_key or local_admin_key()
    if token is None:
        _fail(_NO_KEY.format(path=admin_key_path()), as_json, code=USAGE)
    config = Configuration(host=call.base_url, access_token=token)
    with ApiClient(config) as client:
        api = ImagesApi(client)
        try:
            if as_json:
                result, _, headers = _call(api, request)
            else:
                verb = _VERBS[type(request)]
                with err_console.status(f"{verb}…", spinner="dots"):
                    result, _, headers = _call(api, request)
        except ApiError as exc:
            _fail_api(exc, as_json)
    assert isinstance(result, ImageGenerationResponse)
    files = _save(result, headers, out)
    meta = result.meta
    provider = (meta.provider if meta else None) or headers.get("x-imagegate-provider")
    cost = (
        meta.cost_usd
        if meta and meta.cost_usd is not None
        else _float(headers.get("x-imagegate-cost-usd"))
    )
    if as_json:
        summary = {
            "provider": provider,
            "model": meta.model if meta else None,
            "generation_id": meta.generation_id
            if meta
            else headers.get("x-imagegate-generation-id"),
            "cost_usd": cost,
            "size": result.size,
            "output_format": result.output_format,
            "files": [str(f.resolve()) for f in files],
        }
        typer.echo(json.dumps(summary))
        return
    model = meta.model if meta else "?"
    out_console.print(f"provider [bold]{provider}[/] · model {model} · cost ${cost or 0:.4f}")
    for path in files:
        out_console.print(str(path), highlight=False)


def _save(result: ImageGenerationResponse, headers: dict[str, str], out: Path) -> list[Path]:
    stem = (
        (result.meta.generation_id if result.meta else None)
        or headers.get("x-imagegate-generation-id")
        or time.strftime("image-%Y%m%d-%H%M%S")
    )
    ext = {"jpeg": "jpg"}.get(result.output_format or "png", result.output_format or "png")
    return [image.save(out / f"{stem}-{i}.{ext}") for i, image in enumerate(result.data)]


_NO_KEY = (
    "no API key. Pass one with --api-key KEY, set IMAGEGATE_API_KEY, or point "
    "IMAGEGATE_DATA_DIR at the server's data dir so its admin-key file is read "
    "(looked for {path})."
)


def _fail_api(exc: ApiError, as_json: bool) -> NoReturn:
    error = {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
    line = json.dumps({"status": exc.status, "error": error}) if as_json else None
    where = f" (param: {exc.param})" if exc.param else ""
    status = f" {exc.status}" if exc.status else ""
    fail(f"error{status}: {exc.message}{where}", FAILED, line)


def _fail(message: str, as_json: bool, code: int = FAILED) -> NoReturn:
    line = json.dumps({"status": None, "error": {"message": message}}) if as_json else None
    fail(message, code, line)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
