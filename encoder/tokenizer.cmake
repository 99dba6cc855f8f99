# encoder/tokenizer.cmake - sources and tests of the tokenizer part
