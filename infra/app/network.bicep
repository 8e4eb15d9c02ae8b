// Virtual network for the Application Gateway. Its subnet has the Microsoft.Web service endpoint, so
// the gateway's calls to the Function App arrive tagged with this subnet and the Function App's access
// restriction can allow exactly this subnet (and deny everything else).

@description('Name of the virtual network.')
param vnetName string

@description('Name of the network security group of the Application Gateway subnet.')
param nsgName string

@description('Azure region of the network.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Address space of the virtual network.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Address prefix of the Application Gateway subnet (a /24 leaves room to scale out).')
param appGatewaySubnetPrefix string = '10.40.0.0/24'

@description('Who may call the gateway on its listener ports: a service tag (Internet) or a CIDR such as your corporate egress range.')
param allowedClientSourcePrefix string = 'Internet'

@description('The Application Gateway listener ports clients may reach (80 and/or 443); nothing else is open to them.')
param clientPorts array

var appGatewaySubnetName = 'snet-appgw'

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  //checkov:skip=CKV_AZURE_160: port 80 is open only while it is a listener: without a TLS certificate, or with one and allowHttp (then it only redirects to 443). Narrow allowedClientSourcePrefix to restrict callers.
  name: nsgName
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        // Application Gateway v2 infrastructure ports; the platform requires them open.
        name: 'AllowGatewayManager'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'GatewayManager'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '65200-65535'
        }
      }
      {
        name: 'AllowAzureLoadBalancer'
        properties: {
          priority: 110
          direction: 'Inbound'
          access: 'Allow'
          protocol: '*'
          sourceAddressPrefix: 'AzureLoadBalancer'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
      {
        name: 'AllowGatewayClients'
        properties: {
          priority: 120
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: allowedClientSourcePrefix
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRanges: clientPorts
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        vnetAddressPrefix
      ]
    }
    subnets: [
      {
        name: appGatewaySubnetName
        properties: {
          addressPrefix: appGatewaySubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          serviceEndpoints: [
            {
              service: 'Microsoft.Web'
              locations: [
                '*'
              ]
            }
          ]
        }
      }
    ]
  }
}

output appGatewaySubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, appGatewaySubnetName)
