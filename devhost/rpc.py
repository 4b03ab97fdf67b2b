"""The host <-> worker protocol (FunctionRpc) as real protobuf classes: the `protos` the worker takes.

The Functions host and the Python worker talk in `AzureFunctionsRpcMessages` protobuf messages, whose
public definition is Azure/azure-functions-language-worker-protobuf `src/proto/FunctionRpc.proto` and
`src/proto/shared/NullableTypes.proto`. Azure's proxy worker hands the classes generated from them
to the worker library as `request.properties["protos"]` (Azure/azure-functions-python-worker,
`workers/proxy_worker/dispatcher.py`, `_handle__worker_init_request`), and the library builds its
responses and reads the host's requests through them.

This module declares the subset of those messages that the worker library and the local host use,
with the definition's message, field and enum names and numbers, and builds protobuf classes from it
at import (no generated code, no protoc). Omitted: messages neither side uses here (file changes,
shared memory requests, warm-up, claims identities). Attribute access on the classes (`protos.X`)
works as on the generated module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory, timestamp_pb2

_T = descriptor_pb2.FieldDescriptorProto
PACKAGE = "AzureFunctionsRpcMessages"
_SCALARS = {
    "string": _T.TYPE_STRING, "bytes": _T.TYPE_BYTES, "bool": _T.TYPE_BOOL, "double": _T.TYPE_DOUBLE,
    "int32": _T.TYPE_INT32, "int64": _T.TYPE_INT64, "sint64": _T.TYPE_SINT64,
}


@dataclass(frozen=True)
class F:
    """One field: `kind` is a scalar name, `.Full.Name` of a message, or `enum:.Full.Name`;
    `map_of` makes it a `map<key, kind>`."""

    name: str
    number: int
    kind: str
    repeated: bool = False
    oneof: str = ""
    map_key: str = ""


@dataclass(frozen=True)
class M:
    """One message with its fields and nested enums (`{"Enum": {"value": number}}`)."""

    name: str
    fields: tuple[F, ...]
    enums: dict[str, dict[str, int]] = field(default_factory=dict)


def _rpc(name: str) -> str:
    return f".{PACKAGE}.{name}"


_NULLABLE_TYPES = (  # shared/NullableTypes.proto (no package)
    M("NullableString", (F("value", 1, "string", oneof="string"),)),
    M("NullableDouble", (F("value", 1, "double", oneof="double"),)),
    M("NullableBool", (F("value", 1, "bool", oneof="bool"),)),
    M("NullableTimestamp", (F("value", 1, ".google.protobuf.Timestamp", oneof="timestamp"),)),
)

_TYPED_DATA_CHOICES = (
    ("string", 1, "string"), ("json", 2, "string"), ("bytes", 3, "bytes"), ("stream", 4, "bytes"),
    ("http", 5, _rpc("RpcHttp")), ("int", 6, "sint64"), ("double", 7, "double"),
    ("collection_bytes", 8, _rpc("CollectionBytes")), ("collection_string", 9, _rpc("CollectionString")),
    ("collection_double", 10, _rpc("CollectionDouble")), ("collection_sint64", 11, _rpc("CollectionSInt64")),
    ("model_binding_data", 12, _rpc("ModelBindingData")),
    ("collection_model_binding_data", 13, _rpc("CollectionModelBindingData")),
)

_FUNCTION_RPC = (  # FunctionRpc.proto (package AzureFunctionsRpcMessages)
    M("StreamingMessage", (
        F("request_id", 1, "string"),
        F("start_stream", 20, _rpc("StartStream"), oneof="content"),
        F("worker_init_request", 17, _rpc("WorkerInitRequest"), oneof="content"),
        F("worker_init_response", 16, _rpc("WorkerInitResponse"), oneof="content"),
        F("worker_status_request", 12, _rpc("WorkerStatusRequest"), oneof="content"),
        F("worker_status_response", 13, _rpc("WorkerStatusResponse"), oneof="content"),
        F("function_load_request", 8, _rpc("FunctionLoadRequest"), oneof="content"),
        F("function_load_response", 9, _rpc("FunctionLoadResponse"), oneof="content"),
        F("invocation_request", 4, _rpc("InvocationRequest"), oneof="content"),
        F("invocation_response", 5, _rpc("InvocationResponse"), oneof="content"),
        F("rpc_log", 2, _rpc("RpcLog"), oneof="content"),
        F("functions_metadata_request", 29, _rpc("FunctionsMetadataRequest"), oneof="content"),
        F("function_metadata_response", 30, _rpc("FunctionMetadataResponse"), oneof="content"),
    )),
    M("StartStream", (F("worker_id", 2, "string"),)),
    M("WorkerInitRequest", (
        F("host_version", 1, "string"), F("capabilities", 2, "string", map_key="string"),
        F("log_categories", 3, f"enum:{_rpc('RpcLog.Level')}", map_key="string"),
        F("worker_directory", 4, "string"), F("function_app_directory", 5, "string"),
    )),
    M("WorkerInitResponse", (
        F("worker_version", 1, "string"), F("capabilities", 2, "string", map_key="string"),
        F("result", 3, _rpc("StatusResult")), F("worker_metadata", 4, _rpc("WorkerMetadata")),
    )),
    M("WorkerMetadata", (
        F("runtime_name", 1, "string"), F("runtime_version", 2, "string"), F("worker_version", 3, "string"),
        F("worker_bitness", 4, "string"), F("custom_properties", 5, "string", map_key="string"),
    )),
    M("StatusResult", (
        F("status", 4, f"enum:{_rpc('StatusResult.Status')}"), F("result", 1, "string"),
        F("exception", 2, _rpc("RpcException")), F("logs", 3, _rpc("RpcLog"), repeated=True),
    ), {"Status": {"Failure": 0, "Success": 1, "Cancelled": 2}}),
    M("WorkerStatusRequest", ()),
    M("WorkerStatusResponse", ()),
    M("FunctionLoadRequest", (
        F("function_id", 1, "string"), F("metadata", 2, _rpc("RpcFunctionMetadata")),
        F("managed_dependency_enabled", 3, "bool"),
    )),
    M("FunctionLoadResponse", (
        F("function_id", 1, "string"), F("result", 2, _rpc("StatusResult")),
        F("is_dependency_downloaded", 3, "bool"),
    )),
    M("RpcFunctionMetadata", (
        F("name", 4, "string"), F("directory", 1, "string"), F("script_file", 2, "string"),
        F("entry_point", 3, "string"), F("bindings", 6, _rpc("BindingInfo"), map_key="string"),
        F("is_proxy", 7, "bool"), F("status", 8, _rpc("StatusResult")), F("language", 9, "string"),
        F("raw_bindings", 10, "string", repeated=True), F("function_id", 13, "string"),
        F("managed_dependency_enabled", 14, "bool"), F("retry_options", 15, _rpc("RpcRetryOptions")),
        F("properties", 16, "string", map_key="string"),
    )),
    M("FunctionsMetadataRequest", (F("function_app_directory", 1, "string"),)),
    M("FunctionMetadataResponse", (
        F("function_metadata_results", 1, _rpc("RpcFunctionMetadata"), repeated=True),
        F("result", 2, _rpc("StatusResult")), F("use_default_metadata_indexing", 3, "bool"),
    )),
    M("InvocationRequest", (
        F("invocation_id", 1, "string"), F("function_id", 2, "string"),
        F("input_data", 3, _rpc("ParameterBinding"), repeated=True),
        F("trigger_metadata", 4, _rpc("TypedData"), map_key="string"),
        F("trace_context", 5, _rpc("RpcTraceContext")), F("retry_context", 6, _rpc("RetryContext")),
    )),
    M("RpcTraceContext", (
        F("trace_parent", 1, "string"), F("trace_state", 2, "string"),
        F("attributes", 3, "string", map_key="string"),
    )),
    M("RetryContext", (
        F("retry_count", 1, "int32"), F("max_retry_count", 2, "int32"), F("exception", 3, _rpc("RpcException")),
    )),
    M("InvocationResponse", (
        F("invocation_id", 1, "string"), F("output_data", 2, _rpc("ParameterBinding"), repeated=True),
        F("return_value", 4, _rpc("TypedData")), F("result", 3, _rpc("StatusResult")),
    )),
    M("TypedData", tuple(F(name, number, kind, oneof="data") for name, number, kind in _TYPED_DATA_CHOICES)),
    M("RpcSharedMemory", (
        F("name", 1, "string"), F("offset", 2, "int64"), F("count", 3, "int64"),
        F("type", 4, f"enum:{_rpc('RpcDataType')}"),
    )),
    M("CollectionString", (F("string", 1, "string", repeated=True),)),
    M("CollectionBytes", (F("bytes", 1, "bytes", repeated=True),)),
    M("CollectionDouble", (F("double", 1, "double", repeated=True),)),
    M("CollectionSInt64", (F("sint64", 1, "sint64", repeated=True),)),
    M("ParameterBinding", (
        F("name", 1, "string"), F("data", 2, _rpc("TypedData"), oneof="rpc_data"),
        F("rpc_shared_memory", 3, _rpc("RpcSharedMemory"), oneof="rpc_data"),
    )),
    M("BindingInfo", (
        F("type", 2, "string"), F("direction", 3, f"enum:{_rpc('BindingInfo.Direction')}"),
        F("data_type", 4, f"enum:{_rpc('BindingInfo.DataType')}"),
        F("properties", 5, "string", map_key="string"),
    ), {"Direction": {"in": 0, "out": 1, "inout": 2},
        "DataType": {"undefined": 0, "string": 1, "binary": 2, "stream": 3}}),
    M("RpcLog", (
        F("invocation_id", 1, "string"), F("category", 2, "string"), F("level", 3, f"enum:{_rpc('RpcLog.Level')}"),
        F("message", 4, "string"), F("event_id", 5, "string"), F("exception", 6, _rpc("RpcException")),
        F("properties", 7, "string"), F("log_category", 8, f"enum:{_rpc('RpcLog.RpcLogCategory')}"),
    ), {"Level": {"Trace": 0, "Debug": 1, "Information": 2, "Warning": 3, "Error": 4, "Critical": 5, "None": 6},
        "RpcLogCategory": {"User": 0, "System": 1, "CustomMetric": 2}}),
    M("RpcException", (
        F("source", 3, "string"), F("stack_trace", 1, "string"), F("message", 2, "string"),
        F("is_user_exception", 4, "bool"), F("type", 5, "string"),
    )),
    M("RpcHttpCookie", (
        F("name", 1, "string"), F("value", 2, "string"), F("domain", 3, ".NullableString"),
        F("path", 4, ".NullableString"), F("expires", 5, ".NullableTimestamp"), F("secure", 6, ".NullableBool"),
        F("http_only", 7, ".NullableBool"), F("same_site", 8, f"enum:{_rpc('RpcHttpCookie.SameSite')}"),
        F("max_age", 9, ".NullableDouble"),
    ), {"SameSite": {"None": 0, "Lax": 1, "Strict": 2, "ExplicitNone": 3}}),
    M("RpcHttp", (
        F("method", 1, "string"), F("url", 2, "string"), F("headers", 3, "string", map_key="string"),
        F("body", 4, _rpc("TypedData")), F("params", 10, "string", map_key="string"),
        F("status_code", 12, "string"), F("query", 15, "string", map_key="string"),
        F("enable_content_negotiation", 16, "bool"), F("rawBody", 17, _rpc("TypedData")),
        F("cookies", 19, _rpc("RpcHttpCookie"), repeated=True),
        F("nullable_headers", 20, ".NullableString", map_key="string"),
        F("nullable_params", 21, ".NullableString", map_key="string"),
        F("nullable_query", 22, ".NullableString", map_key="string"),
    )),
    M("ModelBindingData", (
        F("version", 1, "string"), F("source", 2, "string"), F("content_type", 3, "string"),
        F("content", 4, "bytes"),
    )),
    M("CollectionModelBindingData", (F("model_binding_data", 1, _rpc("ModelBindingData"), repeated=True),)),
    M("RpcRetryOptions", (
        F("max_retry_count", 2, "int32"), F("delay_interval", 3, ".google.protobuf.Duration"),
        F("minimum_interval", 4, ".google.protobuf.Duration"), F("maximum_interval", 5, ".google.protobuf.Duration"),
        F("retry_strategy", 6, f"enum:{_rpc('RpcRetryOptions.RetryStrategy')}"),
    ), {"RetryStrategy": {"exponential_backoff": 0, "fixed_delay": 1}}),
)
_TOP_LEVEL_ENUMS = {"RpcDataType": {
    "unknown": 0, "string": 1, "json": 2, "bytes": 3, "stream": 4, "http": 5, "int": 6, "double": 7,
    "collection_bytes": 8, "collection_string": 9, "collection_double": 10, "collection_sint64": 11,
}}


def _set_type(proto: descriptor_pb2.FieldDescriptorProto, kind: str) -> None:
    if kind in _SCALARS:
        proto.type = _SCALARS[kind]
    elif kind.startswith("enum:"):
        proto.type, proto.type_name = _T.TYPE_ENUM, kind[len("enum:"):]
    else:
        proto.type, proto.type_name = _T.TYPE_MESSAGE, kind


def _add_enum(target: Any, name: str, values: dict[str, int]) -> None:
    enum = target.add(name=name)
    for value_name, number in values.items():
        enum.value.add(name=value_name, number=number)


def _message(spec: M, full_prefix: str) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto(name=spec.name)
    for enum_name, values in spec.enums.items():
        _add_enum(proto.enum_type, enum_name, values)
    oneofs: list[str] = []
    for f in spec.fields:
        fp = proto.field.add(name=f.name, number=f.number, json_name=f.name)
        fp.label = _T.LABEL_REPEATED if (f.repeated or f.map_key) else _T.LABEL_OPTIONAL
        if f.map_key:  # map<k, v> is a repeated nested `<Name>Entry {key = 1; value = 2}` with map_entry set
            entry_name = "".join(part.capitalize() for part in f.name.split("_")) + "Entry"
            entry = proto.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            key = entry.field.add(name="key", number=1, label=_T.LABEL_OPTIONAL)
            _set_type(key, f.map_key)
            value = entry.field.add(name="value", number=2, label=_T.LABEL_OPTIONAL)
            _set_type(value, f.kind)
            fp.type, fp.type_name = _T.TYPE_MESSAGE, f"{full_prefix}.{spec.name}.{entry_name}"
        else:
            _set_type(fp, f.kind)
        if f.oneof:
            if f.oneof not in oneofs:
                oneofs.append(f.oneof)
                proto.oneof_decl.add(name=f.oneof)
            fp.oneof_index = oneofs.index(f.oneof)
    return proto


def _build() -> dict[str, Any]:
    pool = descriptor_pool.Default()
    nullable = descriptor_pb2.FileDescriptorProto(
        name="loadme-devhost/shared/NullableTypes.proto", syntax="proto3",
        dependency=[timestamp_pb2.DESCRIPTOR.name])
    nullable.message_type.extend(_message(m, "") for m in _NULLABLE_TYPES)
    rpc = descriptor_pb2.FileDescriptorProto(
        name="loadme-devhost/FunctionRpc.proto", package=PACKAGE, syntax="proto3",
        dependency=[duration_pb2.DESCRIPTOR.name, nullable.name])
    rpc.message_type.extend(_message(m, f".{PACKAGE}") for m in _FUNCTION_RPC)
    for enum_name, values in _TOP_LEVEL_ENUMS.items():
        _add_enum(rpc.enum_type, enum_name, values)
    classes: dict[str, Any] = {}
    for file_proto, prefix in ((nullable, ""), (rpc, f"{PACKAGE}.")):
        pool.Add(file_proto)
        for message in file_proto.message_type:
            classes[message.name] = message_factory.GetMessageClass(
                pool.FindMessageTypeByName(prefix + message.name))
    return classes


_CLASSES = _build()
NullableString = _CLASSES["NullableString"]
NullableDouble = _CLASSES["NullableDouble"]
NullableBool = _CLASSES["NullableBool"]
NullableTimestamp = _CLASSES["NullableTimestamp"]
StreamingMessage = _CLASSES["StreamingMessage"]
StartStream = _CLASSES["StartStream"]
WorkerInitRequest = _CLASSES["WorkerInitRequest"]
WorkerInitResponse = _CLASSES["WorkerInitResponse"]
WorkerMetadata = _CLASSES["WorkerMetadata"]
StatusResult = _CLASSES["StatusResult"]
WorkerStatusRequest = _CLASSES["WorkerStatusRequest"]
WorkerStatusResponse = _CLASSES["WorkerStatusResponse"]
FunctionLoadRequest = _CLASSES["FunctionLoadRequest"]
FunctionLoadResponse = _CLASSES["FunctionLoadResponse"]
RpcFunctionMetadata = _CLASSES["RpcFunctionMetadata"]
FunctionsMetadataRequest = _CLASSES["FunctionsMetadataRequest"]
FunctionMetadataResponse = _CLASSES["FunctionMetadataResponse"]
InvocationRequest = _CLASSES["InvocationRequest"]
RpcTraceContext = _CLASSES["RpcTraceContext"]
RetryContext = _CLASSES["RetryContext"]
InvocationResponse = _CLASSES["InvocationResponse"]
TypedData = _CLASSES["TypedData"]
RpcSharedMemory = _CLASSES["RpcSharedMemory"]
CollectionString = _CLASSES["CollectionString"]
CollectionBytes = _CLASSES["CollectionBytes"]
CollectionDouble = _CLASSES["CollectionDouble"]
CollectionSInt64 = _CLASSES["CollectionSInt64"]
ParameterBinding = _CLASSES["ParameterBinding"]
BindingInfo = _CLASSES["BindingInfo"]
RpcLog = _CLASSES["RpcLog"]
RpcException = _CLASSES["RpcException"]
RpcHttpCookie = _CLASSES["RpcHttpCookie"]
RpcHttp = _CLASSES["RpcHttp"]
ModelBindingData = _CLASSES["ModelBindingData"]
CollectionModelBindingData = _CLASSES["CollectionModelBindingData"]
RpcRetryOptions = _CLASSES["RpcRetryOptions"]
