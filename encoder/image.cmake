# encoder/image.cmake - sources and tests of the image part
