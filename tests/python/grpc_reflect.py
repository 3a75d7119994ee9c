"""Lists a gRPC server's services through server reflection, as grpcurl
does, with no .proto file: an independent client of inferq's reflection.

usage: grpc_reflect.py HOST:PORT [TOKEN]
Prints JSON: {"services": [...], "methods": {service: [method, ...]}}.
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pb2
# grpcio-reflection ships the v1alpha protocol (grpcurl tries v1 first, then
# v1alpha); inferq serves both.
from grpc_reflection.v1alpha import reflection_pb2 as v1, reflection_pb2_grpc as v1_grpc


def main():
    target = sys.argv[1]
    metadata = [("authorization", "Bearer " + sys.argv[2])] if len(sys.argv) > 2 else []
    with grpc.insecure_channel(target) as channel:
        stub = v1_grpc.ServerReflectionStub(channel)

        def ask(**kw):
            replies = stub.ServerReflectionInfo(
                iter([v1.ServerReflectionRequest(**kw)]), metadata=metadata, timeout=10
            )
            return next(iter(replies))

        services = [s.name for s in ask(list_services="").list_services_response.service]
        methods = {}
        for name in services:
            reply = ask(file_containing_symbol=name)
            for raw in reply.file_descriptor_response.file_descriptor_proto:
                fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
                for svc in fd.service:
                    full = f"{fd.package}.{svc.name}" if fd.package else svc.name
                    if full == name:
                        methods[name] = [m.name for m in svc.method]
        print(json.dumps({"services": sorted(services), "methods": methods}))


if __name__ == "__main__":
    main()
