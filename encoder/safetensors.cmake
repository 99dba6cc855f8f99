# encoder/safetensors.cmake - sources and tests of the safetensors part
