{
  "targets": [
    {
      "target_name": "agentd_native",
      "sources": ["helper.c"]
    }
  ]
}
