"""imagegate-client: the reference ``ImagesApi`` surface for imagegate, typed, over httpx alone.

from imagegate_client import ApiClient, Configuration, ImagesApi

api = ImagesApi(ApiClient(Configuration(host="http://127.0.0.1:8080/v1", access_token=KEY)))
result = api.create_image(model="imagegate/sandbox", prompt="a red fox", size="512x512")
result.data[0].save("fox.png")
"""

from imagegate_client.api_client import ApiClient, AsyncApiClient
from imagegate_client.configuration import Configuration
from imagegate_client.errors import (
    ApiConnectionError,
    ApiError,
    ApiException,
    ApiTimeoutError,
    BadRequestException,
    ForbiddenException,
    NotFoundException,
    PaymentRequiredException,
    ServiceException,
    StreamError,
    TooManyRequestsException,
    UnauthorizedException,
)
from imagegate_client.images_api import AsyncImagesApi, ImagesApi
from imagegate_client.models import (
    Attempt,
    Image,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ImagesEditRequest,
    ImagesResponse,
    ImageVariationRequest,
    Meta,
    ProviderRoutingOptions,
    Usage,
)
from imagegate_client.streaming import (
    AsyncImageStream,
    ImageCompletedEvent,
    ImagePartialImageEvent,
    ImageStream,
    ImageStreamEvent,
)

__all__ = [
    "ApiClient",
    "ApiConnectionError",
    "ApiError",
    "ApiException",
    "ApiTimeoutError",
    "AsyncApiClient",
    "AsyncImageStream",
    "AsyncImagesApi",
    "Attempt",
    "BadRequestException",
    "Configuration",
    "ForbiddenException",
    "Image",
    "ImageCompletedEvent",
    "ImageGenerationRequest",
    "ImageGenerationResponse",
    "ImagePartialImageEvent",
    "ImageStream",
    "ImageStreamEvent",
    "ImageVariationRequest",
    "ImagesApi",
    "ImagesEditRequest",
    "ImagesResponse",
    "Meta",
    "NotFoundException",
    "PaymentRequiredException",
    "ProviderRoutingOptions",
    "ServiceException",
    "StreamError",
    "TooManyRequestsException",
    "UnauthorizedException",
    "Usage",
]
