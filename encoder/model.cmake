# encoder/model.cmake - sources and tests of the model part
