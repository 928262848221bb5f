{
  "targets": [
    {
      "target_name": "vfio_user_native",
      "sources": [
        "src/addon.c",
        "src/util.c",
        "src/socket.c",
        "src/framing.c",
        "src/mmap.c",
        "src/fd.c",
        "src/eventfd.c",
        "src/job.c",
        "src/vfio.c",
        "src/iommufd.c",
        "src/layouts.c",
        "src/blockio.c",
        "src/guard.c",
        "src/datagram.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra"],
      "cflags!": ["-Wno-unused-parameter"]
    }
  ]
}
