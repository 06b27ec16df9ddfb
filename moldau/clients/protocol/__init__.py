"""The wire protocol: frames, message schemas and error codes. Pure: bytes in, objects out."""

from moldau.clients.protocol.errors import ErrorCode, MoldauError
from moldau.clients.protocol.frame import (
    DEFAULT_MAX_FRAME_SIZE,
    PUSH_CORRELATION_ID,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from moldau.clients.protocol.messages import (
    SCHEMAS,
    Api,
    Message,
    UnsupportedApi,
    decode_request_body,
    from_body,
    response_class,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE", "PUSH_CORRELATION_ID", "SCHEMAS", "Api", "ErrorCode", "FrameDecoder",
    "FrameTooLarge", "Message", "MoldauError", "ProtocolError", "RequestHeader", "UnsupportedApi",
    "decode_request", "decode_request_body", "decode_response", "encode_request",
    "encode_response", "from_body", "response_class",
]
