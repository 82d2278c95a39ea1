{
  "targets": [
    {
      "target_name": "agentd_native",
      "sources": ["trim.c"]
    }
  ]
}
