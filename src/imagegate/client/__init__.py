"""The imagegate Python SDK: the reference ``ImagesApi`` surface, typed, over httpx.

from imagegate.client import ApiClient, Configuration, ImagesApi

api = ImagesApi(ApiClient(Configuration(host="http://127.0.0.1:8080/v1", access_token=KEY)))
result = api.create_image(model="imagegate/sandbox", prompt="a red fox", size="512x512")
result.data[0].save("fox.png")
"""

from imagegate.client.api_client import ApiClient, AsyncApiClient
from imagegate.client.configuration import Configuration
from imagegate.client.errors import (
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
from imagegate.client.images_api import AsyncImagesApi, ImagesApi
from imagegate.client.models import (
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
from imagegate.client.streaming import (
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
